"""Registering the five slash commands with FakeDiscord, globally and per guild."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.cli.registration import format_registered, register_commands
from app.discord.rest import DiscordRest, RetryPolicy
from app.interactions.commands import COMMAND_NAMES, COMMANDS
from tests.fake_discord import FakeDiscord


@pytest.fixture
def fake() -> Iterator[FakeDiscord]:
    with FakeDiscord() as server:
        yield server


def rest_for(fake: FakeDiscord) -> DiscordRest:
    return DiscordRest(fake.api_base, fake.token, retry=RetryPolicy(backoff_base=0.01))


async def test_global_registration_is_one_valid_put(fake: FakeDiscord) -> None:
    async with rest_for(fake) as rest:
        registered = await register_commands(rest, fake.application_id, COMMANDS)
    assert fake.violations == []
    (put,) = fake.requests
    assert (put.method, put.template) == ("PUT", "/applications/{application_id}/commands")
    assert [c["name"] for c in put.body] == [c["name"] for c in COMMANDS]
    assert {c["name"] for c in registered} == COMMAND_NAMES
    assert all(c["id"] and c["application_id"] == fake.application_id for c in registered)
    assert fake.commands[None] == registered


async def test_guild_registration_is_one_valid_put(fake: FakeDiscord) -> None:
    guild = fake.add_guild()
    async with rest_for(fake) as rest:
        registered = await register_commands(
            rest, fake.application_id, COMMANDS, guild_id=guild["id"]
        )
    assert fake.violations == []
    (put,) = fake.requests
    assert put.template == "/applications/{application_id}/guilds/{guild_id}/commands"
    assert guild["id"] in put.path
    assert {c["guild_id"] for c in registered} == {guild["id"]}
    sync = next(c for c in registered if c["name"] == "sync")
    assert sync["default_member_permissions"] == "32"


async def test_format_registered_lists_name_options_and_permissions(fake: FakeDiscord) -> None:
    async with rest_for(fake) as rest:
        registered = await register_commands(rest, fake.application_id, COMMANDS)
    lines = format_registered(registered).splitlines()
    assert len(lines) == 5
    ask = next(line for line in lines if line.startswith("/ask "))
    assert "options: question*, scope" in ask
    assert "permissions: everyone" in ask
    stats = next(line for line in lines if line.startswith("/stats "))
    assert "options: none" in stats
    sync = next(line for line in lines if line.startswith("/sync "))
    assert "permissions: MANAGE_GUILD" in sync
    assert f"id={registered[0]['id']}" in lines[0]
