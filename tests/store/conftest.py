"""A migrated store on a real SQLite file, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.store.db import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.from_url(f"sqlite:///{tmp_path / 'bot.db'}") as opened:
        await opened.migrate()
        yield opened
