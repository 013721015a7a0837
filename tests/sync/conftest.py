"""Fixtures for sync tests: a real store (SQLite, and Postgres) and a REST client aimed at the
fake Discord."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.discord.rest import DiscordRest
from app.store.db import Store
from tests.fake_discord import DEFAULT_TOKEN, FakeDiscord


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with Store.from_url(database_url) as opened:
        await opened.migrate()
        yield opened


@pytest.fixture
async def rest(fake_discord: FakeDiscord) -> AsyncIterator[DiscordRest]:
    async with DiscordRest(fake_discord.api_base, DEFAULT_TOKEN) as client:
        yield client
