"""Keeping the vector index in step with the store, through the store's outbox column.

Sync writes rows as `pending`; this drains them: deleted rows leave the
index, new and edited rows are embedded and upserted, and only then marked
indexed. A crash in between leaves rows pending for the next drain, so the
index converges on the store whatever happens. Embedding runs in a thread,
so the event loop keeps fetching the next page meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.retrieval.index import IndexItem
from app.store.db import Store
from app.store.models import StoredMessage

logger = logging.getLogger(__name__)

BATCH = 100


class IndexWriter(Protocol):
    """The blocking index calls the drain makes (MessageIndex provides them)."""

    def upsert(self, items: Sequence[IndexItem]) -> None: ...

    def delete(self, ids: Sequence[int]) -> None: ...


@dataclass
class IndexCounts:
    """How many rows a drain embedded and removed."""

    embedded: int = 0
    removed: int = 0


def index_item(message: StoredMessage) -> IndexItem:
    """The index's view of a stored message."""
    return IndexItem(
        id=message.id,
        text=message.index_text,
        channel_id=message.channel_id,
        guild_id=message.guild_id or "",
        author_id=message.author_id,
        timestamp=int(message.timestamp.timestamp()),
    )


class Indexer:
    """Drains the store's pending rows into the vector index."""

    def __init__(self, store: Store, index: IndexWriter, batch: int = BATCH) -> None:
        self._store = store
        self._index = index
        self._batch = batch
        self._lock = asyncio.Lock()

    async def drain(self) -> IndexCounts:
        """Index everything pending now; return what was done."""
        counts = IndexCounts()
        async with self._lock:
            while ids := await self._store.pending_removal(self._batch):
                await asyncio.to_thread(self._index.delete, ids)
                await self._store.mark_removed(ids)
                counts.removed += len(ids)
            done: set[int] = set()
            while messages := await self._store.pending_index(self._batch):
                if done.issuperset(m.id for m in messages):
                    # Edited again while being embedded: the next drain takes the new text.
                    break
                done.update(m.id for m in messages)
                await asyncio.to_thread(self._index.upsert, [index_item(m) for m in messages])
                await self._store.mark_indexed(
                    [m.id for m in messages],
                    expected_hashes={m.id: m.content_hash for m in messages},
                )
                counts.embedded += len(messages)
        return counts

    async def follow(self, pages_written: asyncio.Event, done: asyncio.Event) -> IndexCounts:
        """Drain each time a page is written, until `done` is set and nothing is pending."""
        total = IndexCounts()
        while True:
            pages_written.clear()
            counts = await self.drain()
            total.embedded += counts.embedded
            total.removed += counts.removed
            if done.is_set() and not pages_written.is_set():
                counts = await self.drain()
                total.embedded += counts.embedded
                total.removed += counts.removed
                return total
            waiter = asyncio.ensure_future(pages_written.wait())
            stopper = asyncio.ensure_future(done.wait())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()
