from __future__ import annotations

import logging
import re
import time
from typing import Any

import pytest

from app.settings import Settings
from app.store.db import Store
from tests.fake_discord import FakeDiscord
from tests.workers.conftest import interaction, run_worker


def shown_text(fake: FakeDiscord, item: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in fake.interaction(item["token"]).shown())


async def test_sync_then_stats_answer_in_discord(
    fake_discord: FakeDiscord, guild: dict[str, Any], settings: Settings
) -> None:
    channel = fake_discord.add_channel(guild["id"], "general")
    fake_discord.add_messages(channel["id"], 150, authors=["alice", "alice", "bob"])
    sync = interaction(fake_discord, "sync", guild_id=guild["id"], channel_id=channel["id"])
    results = await run_worker(settings, [sync])
    assert results[sync["id"]] == "ok"
    text = shown_text(fake_discord, sync)
    assert "Sync finished: 1 channels, 150 new, 0 edited, 0 deleted" in text
    assert "not in SYNC_GUILD_IDS" in text

    stats = interaction(fake_discord, "stats", guild_id=guild["id"], channel_id=channel["id"])
    await run_worker(settings, [stats])
    text = shown_text(fake_discord, stats)
    assert "**150 messages**" in text
    assert "1. Alice: 100" in text and "2. Bob: 50" in text
    for message in fake_discord.interaction(stats["token"]).shown():
        assert message["allowed_mentions"] == {"parse": []}
    assert fake_discord.violations == []

    async with Store.from_url(settings.database_url) as store:
        assert await store.count_live([channel["id"]]) == 150


async def test_stats_before_any_sync_says_to_sync(
    fake_discord: FakeDiscord, guild: dict[str, Any], settings: Settings
) -> None:
    channel = fake_discord.add_channel(guild["id"], "general")
    stats = interaction(fake_discord, "stats", guild_id=guild["id"], channel_id=channel["id"])
    assert (await run_worker(settings, [stats]))[stats["id"]] == "empty"
    assert "run `/sync`" in shown_text(fake_discord, stats)


async def test_expired_interactions_are_dropped_without_a_reply(
    fake_discord: FakeDiscord, guild: dict[str, Any], settings: Settings
) -> None:
    channel = fake_discord.add_channel(guild["id"], "general")
    old = interaction(
        fake_discord,
        "stats",
        guild_id=guild["id"],
        channel_id=channel["id"],
        created=time.time() - 16 * 60,
    )
    assert (await run_worker(settings, [old]))[old["id"]] == "expired"
    assert fake_discord.interaction(old["token"]).shown() == []


async def test_a_failing_command_tells_the_user_with_an_error_id(
    fake_discord: FakeDiscord,
    guild: dict[str, Any],
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = fake_discord.add_channel(guild["id"], "general")
    # The sync reads the channel with the bot token; a refused token fails the command.
    fake_discord.token = "another-token-entirely-0000000000"
    sync = interaction(fake_discord, "sync", guild_id=guild["id"], channel_id=channel["id"])
    with caplog.at_level(logging.ERROR, logger="workers.worker"):
        assert (await run_worker(settings, [sync]))[sync["id"]] == "error"
    text = shown_text(fake_discord, sync)
    # The owner's problem is not the member's: they get a short message and an id...
    assert text.startswith("Sorry, I couldn't answer that: something went wrong on my side")
    assert "token" not in text
    error_id = re.search(r"error id `([0-9a-f]{8})`", text)
    assert error_id is not None
    # ...and the log under that id says what went wrong, in full.
    logged = [r for r in caplog.records if error_id.group(1) in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert "bot token was refused" in str(logged[0].exc_info[1])


async def test_a_command_error_is_shown_to_the_member(
    fake_discord: FakeDiscord, guild: dict[str, Any], settings: Settings
) -> None:
    channel = fake_discord.add_channel(guild["id"], "general")
    # A command used outside a server: the handler says so in words meant for the member.
    ask = interaction(
        fake_discord, "ask", {"question": "who?"}, guild_id=guild["id"], channel_id=channel["id"]
    )
    del ask["guild_id"]
    assert (await run_worker(settings, [ask]))[ask["id"]] == "error"
    text = shown_text(fake_discord, ask)
    assert "this command works in a server's channels only" in text


async def test_unknown_command_is_answered(
    fake_discord: FakeDiscord, guild: dict[str, Any], settings: Settings
) -> None:
    channel = fake_discord.add_channel(guild["id"], "general")
    odd = interaction(fake_discord, "dance", guild_id=guild["id"], channel_id=channel["id"])
    assert (await run_worker(settings, [odd]))[odd["id"]] == "unknown_command"
    assert "/dance" in shown_text(fake_discord, odd)
