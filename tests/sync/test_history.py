from __future__ import annotations

from typing import Any

import pytest

from app.discord.errors import DiscordUnauthorized
from app.discord.payloads import channel_from_discord
from app.discord.rest import DiscordRest
from app.store.db import Store
from app.store.models import ChannelAccess, ChannelRecord
from app.sync.history import HistorySync
from tests.fake_discord import HISTORY_START, FakeDiscord

DAY = 86_400.0


def history(
    rest: DiscordRest, fake: FakeDiscord, store: Store, now: float, **kw: Any
) -> HistorySync:
    return HistorySync(
        rest,
        store,
        bot_user_id=str(fake.bot_user["id"]),
        recheck_seconds=kw.pop("recheck_seconds", 7 * DAY),
        clock=lambda: now,
        **kw,
    )


def record(fake: FakeDiscord, channel_id: str) -> ChannelRecord:
    return channel_from_discord(fake.channels[channel_id])


async def stored_ids(store: Store, channel_id: str) -> list[int]:
    rows = await store.database.fetch_all(
        "SELECT id FROM messages WHERE channel_id = :c AND deleted = FALSE ORDER BY id",
        {"c": channel_id},
    )
    return [int(r["id"]) for r in rows]


def discord_ids(fake: FakeDiscord, channel_id: str, *, bots: bool = False) -> list[int]:
    return sorted(
        int(m["id"])
        for m in fake.messages[channel_id]
        if bots or m["author"]["id"] != fake.bot_user["id"]
    )


@pytest.fixture
def guild(fake_discord: FakeDiscord) -> dict[str, Any]:
    return fake_discord.add_guild("History Club")


async def test_backfill_then_forward_stores_exactly_what_discord_holds(
    fake_discord: FakeDiscord, rest: DiscordRest, store: Store, guild: dict[str, Any]
) -> None:
    channel = fake_discord.add_channel(guild["id"], "general")
    fake_discord.add_messages(channel["id"], 250)
    sync = history(rest, fake_discord, store, HISTORY_START + 30 * DAY)

    first = await sync.sync_channel(record(fake_discord, channel["id"]))
    assert first.new == 250
    assert await stored_ids(store, channel["id"]) == discord_ids(fake_discord, channel["id"])
    state = await store.channel_state(channel["id"])
    assert state is not None and state.backfill_complete
    assert state.newest_synced_id == max(discord_ids(fake_discord, channel["id"]))

    fake_discord.add_messages(channel["id"], 130)
    before_second = len(fake_discord.requests)
    second = await sync.sync_channel(record(fake_discord, channel["id"]))
    assert second.new == 130
    assert await stored_ids(store, channel["id"]) == discord_ids(fake_discord, channel["id"])
    # Two forward pages with `after`, then one page of recheck that already reaches
    # past the recent window: the old history is never re-read.
    second_run = fake_discord.requests[before_second:]
    assert [sorted(r.query) for r in second_run] == [["after", "limit"]] * 2 + [["limit"]]
    assert fake_discord.violations == []


async def test_edits_and_deletions_in_the_recent_window(
    fake_discord: FakeDiscord, rest: DiscordRest, store: Store, guild: dict[str, Any]
) -> None:
    channel = fake_discord.add_channel(guild["id"], "general")
    old = fake_discord.add_messages(channel["id"], 5, start=HISTORY_START)
    recent = fake_discord.add_messages(channel["id"], 120, start=HISTORY_START + 20 * DAY)
    now = HISTORY_START + 21 * DAY
    sync = history(rest, fake_discord, store, now)
    await sync.sync_channel(record(fake_discord, channel["id"]))

    fake_discord.edit_message(channel["id"], recent[3]["id"], "the meeting moved to Friday", now)
    fake_discord.delete_message(channel["id"], recent[50]["id"])
    fake_discord.delete_message(channel["id"], recent[-1]["id"])
    # Outside the window: Discord's deletion is not noticed, by design.
    fake_discord.delete_message(channel["id"], old[0]["id"])

    result = await sync.sync_channel(record(fake_discord, channel["id"]))
    assert (result.new, result.edited, result.deleted) == (0, 1, 2)
    [edited] = await store.get_messages([int(recent[3]["id"])])
    assert edited.content == "the meeting moved to Friday" and edited.edited
    assert await store.get_messages([int(recent[50]["id"]), int(recent[-1]["id"])]) == []
    assert int(old[0]["id"]) in await stored_ids(store, channel["id"])


async def test_threads_and_announcements_sync_like_channels(
    fake_discord: FakeDiscord, rest: DiscordRest, store: Store, guild: dict[str, Any]
) -> None:
    news = fake_discord.add_channel(guild["id"], "news", 5)
    thread = fake_discord.add_thread(news["id"], "discussion")
    fake_discord.add_messages(news["id"], 40)
    fake_discord.add_messages(thread["id"], 60)
    sync = history(rest, fake_discord, store, HISTORY_START + 60 * DAY)
    for channel_id in (news["id"], thread["id"]):
        await sync.sync_channel(record(fake_discord, channel_id))
        assert await stored_ids(store, channel_id) == discord_ids(fake_discord, channel_id)


async def test_forbidden_channel_is_marked_and_skipped(
    fake_discord: FakeDiscord, rest: DiscordRest, store: Store, guild: dict[str, Any]
) -> None:
    secret = fake_discord.add_channel(guild["id"], "mods-only")
    fake_discord.add_messages(secret["id"], 10)
    fake_discord.forbid_channel(secret["id"])
    await store.upsert_channels([record(fake_discord, secret["id"])])
    result = await history(rest, fake_discord, store, HISTORY_START).sync_channel(
        record(fake_discord, secret["id"])
    )
    assert result.no_access
    state = await store.channel_state(secret["id"])
    assert state is not None and state.access is ChannelAccess.NO_ACCESS
    assert await stored_ids(store, secret["id"]) == []


async def test_bad_token_stops_the_run(
    fake_discord: FakeDiscord, store: Store, guild: dict[str, Any]
) -> None:
    channel = fake_discord.add_channel(guild["id"], "general")
    fake_discord.add_messages(channel["id"], 3)
    async with DiscordRest(fake_discord.api_base, "wrong-token-000000000000") as bad:
        with pytest.raises(DiscordUnauthorized, match="DISCORD_BOT_TOKEN"):
            await history(bad, fake_discord, store, HISTORY_START).sync_channel(
                record(fake_discord, channel["id"])
            )


async def test_the_bots_own_messages_are_not_stored(
    fake_discord: FakeDiscord, rest: DiscordRest, store: Store, guild: dict[str, Any]
) -> None:
    channel = fake_discord.add_channel(guild["id"], "general")
    fake_discord.add_messages(channel["id"], 4)
    fake_discord.add_message(channel["id"], "Here is my answer", author=fake_discord.bot_user)
    await history(rest, fake_discord, store, HISTORY_START).sync_channel(
        record(fake_discord, channel["id"])
    )
    assert await stored_ids(store, channel["id"]) == discord_ids(fake_discord, channel["id"])
    assert len(await stored_ids(store, channel["id"])) == 4


async def test_missing_message_content_intent_is_reported(
    fake_discord: FakeDiscord, rest: DiscordRest, store: Store, guild: dict[str, Any]
) -> None:
    fake_discord.message_content_intent = False
    channel = fake_discord.add_channel(guild["id"], "general")
    fake_discord.add_messages(channel["id"], 10)
    result = await history(rest, fake_discord, store, HISTORY_START).sync_channel(
        record(fake_discord, channel["id"])
    )
    assert result.content_intent_missing


async def test_rate_limits_and_server_errors_lose_nothing(
    fake_discord: FakeDiscord, rest: DiscordRest, store: Store, guild: dict[str, Any]
) -> None:
    channel = fake_discord.add_channel(guild["id"], "general")
    fake_discord.add_messages(channel["id"], 420)
    route = "GET /channels/{channel_id}/messages"
    fake_discord.inject_429(route, times=2, retry_after=0.05)
    fake_discord.inject_429(route, times=1, retry_after=0.05, is_global=True)
    fake_discord.inject_status(500, route, times=2)
    fake_discord.inject_drop(route, times=1)
    result = await history(rest, fake_discord, store, HISTORY_START).sync_channel(
        record(fake_discord, channel["id"])
    )
    assert result.new == 420
    assert await stored_ids(store, channel["id"]) == discord_ids(fake_discord, channel["id"])
    assert fake_discord.max_requests_per_second() <= 50
    assert fake_discord.violations == []
