"""Fixtures for sync tests: a real SQLite store and a REST client aimed at the fake Discord."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.discord.rest import DiscordRest
from app.store.db import Store
from tests.fake_discord import DEFAULT_TOKEN, FakeDiscord


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.from_url(f"sqlite:///{tmp_path / 'bot.db'}") as opened:
        await opened.migrate()
        yield opened


@pytest.fixture
async def rest(fake_discord: FakeDiscord) -> AsyncIterator[DiscordRest]:
    async with DiscordRest(fake_discord.api_base, DEFAULT_TOKEN) as client:
        yield client
