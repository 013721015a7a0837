from __future__ import annotations

from app.cli.main import main

raise SystemExit(main())
