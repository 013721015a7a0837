"""Registering the commands (slash and context-menu) with FakeDiscord, globally and per guild."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.cli.registration import format_registered, register_commands
from app.discord.rest import DiscordRest, RetryPolicy
from app.interactions.commands import (
    COMMAND_NAMES,
    COMMANDS,
    FIND_RELATED,
    MESSAGE,
    SUMMARIZE_FROM_HERE,
)
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
    assert len(lines) == len(COMMANDS)
    ask = next(line for line in lines if line.startswith("/ask "))
    assert "options: question*, scope" in ask
    assert "permissions: everyone" in ask
    stats = next(line for line in lines if line.startswith("/stats "))
    assert "options: period " in stats
    sync = next(line for line in lines if line.startswith("/sync "))
    assert "permissions: MANAGE_GUILD" in sync
    assert f"id={registered[0]['id']}" in lines[0]
    assert any(line.startswith('"Find related" (message menu) ') for line in lines)


async def test_the_context_menu_commands_and_summarize_since_register_valid(
    fake: FakeDiscord,
) -> None:
    async with rest_for(fake) as rest:
        registered = await register_commands(rest, fake.application_id, COMMANDS)
    # The fake validates the PUT body against Discord's OpenAPI spec.
    assert fake.violations == []
    by_name = {c["name"]: c for c in registered}
    for name in (FIND_RELATED, SUMMARIZE_FROM_HERE):
        menu = by_name[name]
        # Discord's rules for message commands: type 3, an empty description, no options.
        assert (menu["type"], menu["description"], menu.get("options")) == (MESSAGE, "", None)
        assert menu["contexts"] == [0]
    since = next(o for o in by_name["summarize"]["options"] if o["name"] == "since")
    assert (since["type"], since.get("required")) == (3, False)
    assert "24h" in since["description"]


async def test_stats_registers_its_period_choices_valid(fake: FakeDiscord) -> None:
    async with rest_for(fake) as rest:
        registered = await register_commands(rest, fake.application_id, COMMANDS)
    # The fake validates the PUT body against Discord's OpenAPI spec.
    assert fake.violations == []
    stats = next(c for c in registered if c["name"] == "stats")
    (period,) = stats["options"]
    assert (period["name"], period["type"], period.get("required")) == ("period", 3, False)
    assert [c["value"] for c in period["choices"]] == ["30d", "1y", "all"]
