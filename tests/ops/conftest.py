"""The worker tests' fixtures (settings, a synced guild), reused for the end-to-end flow."""

from __future__ import annotations

from tests.workers.conftest import guild, server, settings

__all__ = ["guild", "server", "settings"]
