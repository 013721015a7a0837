"""Sync and members' privacy against the fake Discord: an opted-out member's messages are
stored without text, and after an opt-in the next sync reads their span again, resuming
after a crash with no gap."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from app.discord.payloads import channel_from_discord
from app.discord.rest import DiscordRest
from app.discord.snowflakes import time_snowflake
from app.retrieval.embedder import Vectors
from app.retrieval.index import IndexItem
from app.store.db import Store
from app.store.models import ChannelRecord, IndexState, StoredMessage
from app.store.privacy import RefetchSpan
from app.sync.history import PAGE_SIZE, HistorySync
from app.sync.indexer import Indexer
from tests.fake_discord import FakeDiscord

PAGES = "GET /channels/{channel_id}/messages"


class Crash(Exception):
    """The process dies here."""


class CrashingSource:
    """Discord's history, until the `crash_at`-th page read with `after=` inside a span."""

    def __init__(self, rest: DiscordRest, span: RefetchSpan, crash_at: int) -> None:
        self._rest = rest
        self._span = span
        self._crash_at = crash_at
        self.pages = 0

    async def get_channel_messages(
        self,
        channel_id: int | str,
        *,
        before: int | str | None = None,
        after: int | str | None = None,
        limit: int = PAGE_SIZE,
    ) -> list[dict[str, Any]]:
        if after is not None and self._span.after_id <= int(after) < self._span.until_id:
            self.pages += 1
            if self.pages == self._crash_at:
                raise Crash
        return await self._rest.get_channel_messages(
            channel_id, before=before, after=after, limit=limit
        )


def history(source: Any, fake: FakeDiscord, store: Store) -> HistorySync:
    return HistorySync(source, store, bot_user_id=str(fake.bot_user["id"]), recheck_seconds=0)


async def rows(store: Store, author_id: str) -> list[tuple[int, str, bool]]:
    found = await store.database.fetch_all(
        "SELECT id, content, withheld FROM messages WHERE author_id = :a ORDER BY id",
        {"a": author_id},
    )
    return [(int(r["id"]), str(r["content"]), bool(r["withheld"])) for r in found]


def texts(fake: FakeDiscord, channel_id: str, author_id: str) -> list[tuple[int, str, bool]]:
    return [
        (int(m["id"]), str(m["content"]), False)
        for m in fake.messages[channel_id]
        if m["author"]["id"] == author_id
    ]


@pytest.fixture
def channel(fake_discord: FakeDiscord) -> ChannelRecord:
    guild = fake_discord.add_guild("History Club")
    general = fake_discord.add_channel(guild["id"], "general")
    fake_discord.add_messages(general["id"], 250)
    return channel_from_discord(general)


async def test_an_opted_out_member_is_synced_without_text_and_comes_back_after_opt_in(
    fake_discord: FakeDiscord, rest: DiscordRest, store: Store, channel: ChannelRecord
) -> None:
    bob = fake_discord.add_user("bob")["id"]
    await store.opt_out(bob)
    sync = history(rest, fake_discord, store)
    await sync.sync_channel(channel)
    stored = await rows(store, bob)
    assert len(stored) == 83 and {(c, w) for _, c, w in stored} == {("", True)}
    # A later message of theirs, and a sync that reads the old ones again: still no text.
    fake_discord.add_message(channel.id, "bob's new secret", author="bob")
    again = await history(rest, fake_discord, store).sync_channel(channel)
    assert again.new == 1 and again.edited == 0
    assert {(c, w) for _, c, w in await rows(store, bob)} == {("", True)}

    result = await store.opt_in(bob)
    assert (result.messages, result.channels) == (84, 1)
    before = len(fake_discord.requests_for(PAGES))
    restored = await history(rest, fake_discord, store).sync_channel(channel)
    assert restored.edited == 84
    assert await rows(store, bob) == texts(fake_discord, channel.id, bob)
    assert await store.refetch_span(channel.id) is None
    # The forward page, then three pages through the span (250 messages from Bob's first).
    assert len(fake_discord.requests_for(PAGES)) - before == 4
    # Their text is searchable again, in their messages' own rows.
    hits = await store.lexical_search([channel.id], ["secret"], 5)
    assert hits[0][0] == (await rows(store, bob))[-1][0]


async def test_a_refetch_killed_part_way_resumes_where_its_last_page_ended(
    fake_discord: FakeDiscord, rest: DiscordRest, store: Store, channel: ChannelRecord
) -> None:
    bob = fake_discord.add_user("bob")["id"]
    await store.opt_out(bob)
    await history(rest, fake_discord, store).sync_channel(channel)
    await store.opt_in(bob)
    span = await store.refetch_span(channel.id)
    assert span is not None

    crashing = CrashingSource(rest, span, crash_at=2)
    with pytest.raises(Crash):
        await history(crashing, fake_discord, store).sync_channel(channel)
    # The first page and its cursor were committed together; the second never came.
    moved = await store.refetch_span(channel.id)
    assert moved is not None and moved.after_id > span.after_id
    back = [m for m in await rows(store, bob) if not m[2]]
    assert back and all(i <= moved.after_id for i, _, _ in back)
    assert all(w for i, _, w in await rows(store, bob) if i > moved.after_id)

    await history(rest, fake_discord, store).sync_channel(channel)
    assert await rows(store, bob) == texts(fake_discord, channel.id, bob)
    assert await store.refetch_span(channel.id) is None
    count = await store.database.fetch_val(
        "SELECT COUNT(*) FROM messages WHERE channel_id = :c", {"c": channel.id}
    )
    assert count == 250


class GatedIndex:
    """Vectors by id; each embed waits until the test opens `gate`."""

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.gate = threading.Event()
        self.embedding = threading.Event()

    def embed(self, items: Sequence[IndexItem]) -> Vectors:
        self.embedding.set()
        assert self.gate.wait(10.0), "the test never opened the gate"
        return np.zeros((len(items), 4), dtype=np.float32)

    def store(self, items: Sequence[IndexItem], vectors: Vectors) -> None:
        self.ids.update(item.id for item in items)

    def delete(self, ids: Sequence[int]) -> None:
        self.ids.difference_update(ids)


async def test_a_vector_embedded_while_its_author_opts_out_is_deleted_once_written(
    store: Store,
) -> None:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    page = [
        StoredMessage(
            id=time_snowflake((start + timedelta(minutes=n)).timestamp(), n),
            channel_id="c1",
            author_id="u-ana" if n % 2 else "u-ben",
            content=f"message {n}",
            timestamp=start + timedelta(minutes=n),
        )
        for n in range(6)
    ]
    await store.save_page("c1", page)
    index = GatedIndex()
    indexer = Indexer(store, index)
    drain = asyncio.create_task(indexer.drain())
    await asyncio.to_thread(index.embedding.wait, 10.0)
    # Ana opts out while her messages are being embedded: nothing to delete yet.
    result = await store.opt_out("u-ana")
    await indexer.remove(result.vector_ids)
    index.gate.set()
    assert (await drain).embedded == 6
    assert index.ids == {m.id for m in page if m.author_id == "u-ben"}
    states = await store.database.fetch_all(
        "SELECT DISTINCT index_state FROM messages WHERE author_id = 'u-ana'"
    )
    assert [r["index_state"] for r in states] == [IndexState.REMOVED.value]
