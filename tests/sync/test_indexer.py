"""The indexer's drain against a real SQLite store: one batch embeds while the last is stored.

The index here is a recording stand-in, so that the test can see (and hold) each
embed and store call; the real Chroma index is covered by the sync runner tests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import pytest

from app.discord.snowflakes import snowflake_time, time_snowflake
from app.retrieval.embedder import Vectors
from app.retrieval.index import IndexItem, VectorIndexError
from app.store.db import Store
from app.store.models import StoredMessage
from app.sync.indexer import Indexer

CHANNEL = "700000000000000001"
BASE = time_snowflake(datetime(2024, 5, 1, tzinfo=UTC).timestamp())
WAIT = 10.0


def msg(n: int, content: str | None = None) -> StoredMessage:
    message_id = BASE + (n << 22)
    return StoredMessage(
        id=message_id,
        channel_id=CHANNEL,
        guild_id="900000000000000001",
        author_id="1",
        content=f"message {n}" if content is None else content,
        timestamp=datetime.fromtimestamp(snowflake_time(message_id), UTC),
    )


@dataclass
class RecordingIndex:
    """Keeps what it is given; `hold_store` makes the first store wait for the next embed."""

    texts: dict[int, str] = field(default_factory=dict)
    embedded: list[int] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)
    embeds_started: int = 0
    hold_store: bool = False
    fail_store_call: int | None = None
    embed_gate: threading.Event | None = None
    embedding: threading.Event = field(default_factory=threading.Event)
    overlapped: bool = False
    _next_embed: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _store_calls: int = 0

    def embed(self, items: Sequence[IndexItem]) -> Vectors:
        with self._lock:
            self.embeds_started += 1
            if self.embeds_started > 1:
                self._next_embed.set()
            self.embedded.extend(item.id for item in items)
        self.embedding.set()
        if self.embed_gate is not None:
            assert self.embed_gate.wait(WAIT), "the test never released the embed"
        return np.zeros((len(items), 4), dtype=np.float32)

    def store(self, items: Sequence[IndexItem], vectors: Vectors) -> None:
        assert len(items) == len(vectors)
        with self._lock:
            self._store_calls += 1
            call = self._store_calls
        if self.hold_store and call == 1:
            self.overlapped = self._next_embed.wait(WAIT)
        if call == self.fail_store_call:
            raise VectorIndexError("the index volume is full")
        self.stored.extend(item.id for item in items)
        self.texts.update((item.id, item.text) for item in items)

    def delete(self, ids: Sequence[int]) -> None:
        for i in ids:
            self.texts.pop(i, None)


@pytest.fixture
async def store(store: Store) -> Store:
    await store.save_page(CHANNEL, [msg(n) for n in range(250)])
    return store


async def test_each_batch_embeds_while_the_one_before_is_stored(store: Store) -> None:
    index = RecordingIndex(hold_store=True)
    written: list[int] = []

    counts = await Indexer(store, index, batch=100).drain(written.append)

    assert index.overlapped, "the second batch did not start embedding during the first store"
    assert counts.embedded == 250
    assert written == [100, 100, 50]  # reported as each upsert lands, for progress lines
    ids = {msg(n).id for n in range(250)}
    assert sorted(index.embedded) == sorted(ids)  # each message embedded exactly once
    assert sorted(index.stored) == sorted(ids)
    assert await store.count_indexed() == 250
    assert await store.pending_index(10) == []


async def edit_during_first_embed(store: Store, indexer: Indexer, index: RecordingIndex) -> int:
    """Drain, editing message 0 while the first batch (holding it) is being embedded."""
    assert index.embed_gate is not None
    edited = msg(0)
    drain = asyncio.create_task(indexer.drain())
    assert await asyncio.to_thread(index.embedding.wait, WAIT)
    await store.save_page(CHANNEL, [replace(edited, content="the new words")])
    index.embed_gate.set()
    await drain
    return edited.id


async def test_a_message_edited_while_it_embeds_is_embedded_again_in_the_same_drain(
    store: Store,
) -> None:
    index = RecordingIndex(embed_gate=threading.Event())

    edited = await edit_during_first_embed(store, Indexer(store, index, batch=100), index)

    assert index.embedded.count(edited) == 2
    assert index.texts[edited] == "the new words"
    assert await store.pending_index(10) == []


async def test_an_edit_to_the_last_batch_waits_for_the_next_drain_instead_of_looping(
    store: Store,
) -> None:
    index = RecordingIndex(embed_gate=threading.Event())
    indexer = Indexer(store, index, batch=250)

    edited = await edit_during_first_embed(store, indexer, index)

    assert index.texts[edited] == "message 0"
    assert [m.id for m in await store.pending_index(10)] == [edited]
    again = await indexer.drain()
    assert again.embedded == 1
    assert index.texts[edited] == "the new words"
    assert await store.pending_index(10) == []


async def test_a_failed_store_leaves_its_batch_pending_for_the_next_drain(store: Store) -> None:
    index = RecordingIndex(fail_store_call=2)
    indexer = Indexer(store, index, batch=250)  # one step, stored 100 at a time

    with pytest.raises(VectorIndexError):
        await indexer.drain()

    assert await store.count_indexed() == 100
    index.fail_store_call = None
    counts = await indexer.drain()
    assert counts.embedded == 150
    assert await store.count_indexed() == 250
    assert sorted(index.stored) == sorted(msg(n).id for n in range(250))
