"""A migrated store per test, on a real SQLite file and on a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.store.db import Store


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with Store.from_url(database_url) as opened:
        await opened.migrate()
        yield opened
