"""Keeping the vector index in step with the store, through the store's outbox column.

Sync writes rows as `pending`; this drains them: deleted rows leave the
index, new and edited rows are embedded and upserted, and only then marked
indexed. A crash in between leaves rows pending for the next drain, so the
index converges on the store whatever happens. Embedding runs in a thread,
so the event loop keeps fetching the next page meanwhile, and it runs a batch
ahead: while one batch is written to the index and marked indexed, the next
is already being embedded, so the cores seldom wait on the index's writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.retrieval.embedder import Vectors
from app.retrieval.index import IndexItem
from app.store.db import Store
from app.store.models import StoredMessage

logger = logging.getLogger(__name__)

# Messages embedded per step (Chroma still takes them 100 at a time). Larger steps
# pad less (texts are sorted by length within a step) and hand off between threads
# less often: bench.sync's 20,000 messages went at 384/s in steps of 100, about 400
# in steps of 300 or 500, and 421 in steps of 1,000.
BATCH = 1000
# Messages per Chroma upsert, each marked indexed as soon as it is written.
STORE_BATCH = 100


class IndexWriter(Protocol):
    """The blocking index calls the drain makes (MessageIndex provides them)."""

    def embed(self, items: Sequence[IndexItem]) -> Vectors: ...

    def store(self, items: Sequence[IndexItem], vectors: Vectors) -> None: ...

    def delete(self, ids: Sequence[int]) -> None: ...


@dataclass
class IndexCounts:
    """How many rows a drain embedded and removed."""

    embedded: int = 0
    removed: int = 0


@dataclass
class _Embedding:
    """A batch of pending messages and its vectors, being computed or done."""

    batch: list[StoredMessage]
    items: list[IndexItem]
    vectors: asyncio.Future[Vectors]


def index_item(message: StoredMessage) -> IndexItem:
    """The index's view of a stored message."""
    return IndexItem(
        id=message.id,
        text=message.search_text,
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

    async def drain(self, on_indexed: Callable[[int], None] | None = None) -> IndexCounts:
        """Index everything pending now; return what was done.

        `on_indexed`, if given, is told how many messages each time some are written.
        """
        counts = IndexCounts()
        async with self._lock:
            while ids := await self._store.pending_removal(self._batch):
                await asyncio.to_thread(self._index.delete, ids)
                await self._store.mark_removed(ids)
                counts.removed += len(ids)
            seen: set[int] = set()
            embedding = self._embed(await self._next_batch(seen, in_flight=[]))
            while embedding is not None:
                try:
                    # While it embeds, find the next batch, to start the moment it is done.
                    batch = await self._next_batch(seen, in_flight=embedding.batch)
                    await embedding.vectors
                except BaseException:
                    embedding.vectors.cancel()  # the thread runs out; its result is dropped
                    raise
                finished, embedding = embedding, self._embed(batch)
                try:
                    await self._write(finished, on_indexed)
                except BaseException:
                    if embedding is not None:
                        embedding.vectors.cancel()
                    raise
                counts.embedded += len(finished.batch)
        return counts

    async def remove(self, ids: Sequence[int]) -> None:
        """Delete these messages' vectors now, beside any drain in progress (an opt-out).

        A drain in progress, here or in another worker, may still write a vector it embedded
        before the row was withheld: it deletes that one again once written (see `_write`).
        """
        if not ids:
            return
        await asyncio.to_thread(self._index.delete, ids)
        await self._store.mark_removed(ids)

    async def _next_batch(
        self, seen: set[int], *, in_flight: Sequence[StoredMessage]
    ) -> list[StoredMessage]:
        """The next pending messages not being embedded already; empty when done."""
        busy = {m.id for m in in_flight}
        rows = await self._store.pending_index(self._batch + len(busy))
        batch = [m for m in rows if m.id not in busy][: self._batch]
        if seen.issuperset(m.id for m in batch):
            # Edited again while being embedded: the next drain takes the new text.
            return []
        seen.update(m.id for m in batch)
        return batch

    def _embed(self, batch: list[StoredMessage]) -> _Embedding | None:
        """Start embedding a batch in a thread; None for an empty batch."""
        if not batch:
            return None
        items = [index_item(m) for m in batch]
        return _Embedding(
            batch, items, asyncio.ensure_future(asyncio.to_thread(self._index.embed, items))
        )

    async def _write(self, embedding: _Embedding, on_indexed: Callable[[int], None] | None) -> None:
        """Store an embedded batch in the index 100 at a time, marking each 100 indexed."""
        vectors = embedding.vectors.result()
        for start in range(0, len(embedding.batch), STORE_BATCH):
            end = start + STORE_BATCH
            messages, items = embedding.batch[start:end], embedding.items[start:end]
            await asyncio.to_thread(self._index.store, items, vectors[start:end])
            await self._store.mark_indexed(
                [m.id for m in messages], expected_hashes={m.id: m.content_hash for m in messages}
            )
            # Their author opted out while they were embedded: the opt-out may have deleted
            # the vectors before they were written, so they go again now.
            withheld = await self._store.withheld_ids(m.id for m in messages)
            if withheld:
                await asyncio.to_thread(self._index.delete, sorted(withheld))
            if on_indexed is not None:
                on_indexed(len(messages))

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
