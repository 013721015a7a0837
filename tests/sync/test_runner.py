"""Whole sync runs into the store and Chroma (SQLite and an embedded index, Postgres and a Chroma
server): threads, the index in step, edits and deletions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.discord.rest import DiscordRest
from app.retrieval.search import Retriever
from app.settings import Settings
from app.state import State
from app.store.models import IndexState
from app.sync.runner import SyncRunner
from tests.fake_discord import DEFAULT_TOKEN, FORUM, FakeDiscord

pytestmark = pytest.mark.slow

DAY = 86_400.0


@pytest.fixture
async def state(
    tmp_path: Path, model_cache_dir: Path, engine_env: dict[str, str]
) -> AsyncIterator[State]:
    settings = Settings.from_env(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "MODEL_CACHE_DIR": str(model_cache_dir),
            **engine_env,
        }
    )
    opened = await State.open(settings, "test")
    yield opened
    await opened.close()


async def live_ids(state: State, channel_ids: list[str]) -> set[int]:
    rows = await state.store.database.fetch_all(
        "SELECT id FROM messages WHERE deleted = FALSE AND channel_id IN ("
        + ",".join(f"'{c}'" for c in channel_ids)
        + ")"
    )
    return {int(r["id"]) for r in rows}


async def test_a_guild_sync_covers_channels_threads_and_keeps_the_index_in_step(
    fake_discord: FakeDiscord, state: State
) -> None:
    guild = fake_discord.add_guild()
    general = fake_discord.add_channel(guild["id"], "general")
    news = fake_discord.add_channel(guild["id"], "news", 5)
    forum = fake_discord.add_channel(guild["id"], "help", FORUM)
    fake_discord.add_channel(guild["id"], "voice", 2)
    active = fake_discord.add_thread(general["id"], "active thread")
    archived = fake_discord.add_thread(
        general["id"], "old thread", archived=True, archive_timestamp=time.time() - 5 * DAY
    )
    private = fake_discord.add_thread(
        general["id"], "private", private=True, archived=True, archive_timestamp=time.time() - DAY
    )
    post = fake_discord.add_thread(forum["id"], "how do I reset my password?")
    secret = fake_discord.add_channel(guild["id"], "secret")
    fake_discord.forbid_channel(secret["id"])
    readable = [general, news, active, archived, private, post]
    for i, channel in enumerate(readable):
        fake_discord.add_messages(channel["id"], 30 + 25 * i)
    fake_discord.add_messages(secret["id"], 5)

    async with DiscordRest(fake_discord.api_base, DEFAULT_TOKEN) as rest:
        runner = SyncRunner(rest, state.store, state.indexer, recheck_seconds=0)
        summary = await runner.sync_guilds([guild["id"]])

    ids = [c["id"] for c in readable]
    expected = {int(m["id"]) for c in ids for m in fake_discord.messages[c]}
    assert await live_ids(state, ids) == expected
    assert summary.new == len(expected)
    assert summary.channels == len(readable) + 1
    assert summary.no_access == ["secret"]
    assert await state.index.acount() == len(expected) == await state.store.count_live()
    assert await state.store.count_live(index_state=IndexState.PENDING) == 0
    assert fake_discord.violations == []
    assert fake_discord.max_requests_per_second() <= 50


async def test_edits_are_found_by_their_new_words_and_deletions_are_gone(
    fake_discord: FakeDiscord, state: State
) -> None:
    guild = fake_discord.add_guild()
    channel = fake_discord.add_channel(guild["id"], "general")
    now = time.time()
    fillers = fake_discord.add_messages(
        channel["id"], 40, start=now - 3 * DAY, interval=300, text=lambda i: f"chit chat {i}"
    )
    edited = fake_discord.add_message(
        channel["id"], "the picnic is at the lake on saturday", at=now - DAY
    )
    doomed = fake_discord.add_message(
        channel["id"], "the printer on floor two is out of toner", at=now - DAY + 60
    )
    retriever = Retriever(state.store, state.index)
    async with DiscordRest(fake_discord.api_base, DEFAULT_TOKEN) as rest:
        runner = SyncRunner(rest, state.store, state.indexer, recheck_seconds=7 * DAY)
        await runner.sync_guilds([guild["id"]])
        top = await retriever.search("where is the picnic?", {channel["id"]}, 1)
        assert top[0].message.id == int(edited["id"])

        fake_discord.edit_message(
            channel["id"], edited["id"], "the quarterly budget review moved to monday", now
        )
        fake_discord.delete_message(channel["id"], doomed["id"])
        summary = await runner.sync_guilds([guild["id"]])

    assert (summary.new, summary.edited, summary.deleted) == (0, 1, 1)
    by_new_words = await retriever.search("when is the budget review?", {channel["id"]}, 1)
    assert by_new_words[0].message.id == int(edited["id"])
    by_old_words = await retriever.search("where is the picnic at the lake?", {channel["id"]}, 5)
    assert int(edited["id"]) not in [r.message.id for r in by_old_words[:1]]
    toner = await retriever.search("printer toner", {channel["id"]}, 5)
    assert int(doomed["id"]) not in [r.message.id for r in toner]
    assert await state.index.acount() == len(fillers) + 1 == await state.store.count_live()


async def test_passages_keep_every_hit_and_show_each_message_once(
    fake_discord: FakeDiscord, state: State
) -> None:
    guild = fake_discord.add_guild()
    channel = fake_discord.add_channel(guild["id"], "general")
    now = time.time()
    fake_discord.add_messages(
        channel["id"], 30, start=now - 3 * DAY, interval=300, text=lambda i: f"chit chat {i}"
    )
    first = fake_discord.add_message(channel["id"], "the picnic is at the lake", at=now - DAY)
    second = fake_discord.add_message(
        channel["id"], "picnic snacks: bring lemonade to the picnic", at=now - DAY + 60
    )
    async with DiscordRest(fake_discord.api_base, DEFAULT_TOKEN) as rest:
        await SyncRunner(rest, state.store, state.indexer, recheck_seconds=0).sync_guilds(
            [guild["id"]]
        )

    passages = await Retriever(state.store, state.index).passages("picnic", {channel["id"]}, 3)
    hits = [p.hit.id for p in passages]
    assert {int(first["id"]), int(second["id"])} <= set(hits[:2])
    shown = [m.id for p in passages for m in p.messages]
    assert len(shown) == len(set(shown))
    # The second hit was shown beside the first: its own passage is empty but keeps its rank.
    assert passages[1].messages == ()
    assert set(hits[:2]) <= set(shown)
