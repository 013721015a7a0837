"""The worker's state: the store, the vector index and the lock that gives one process both.

The worker opens it at start-up; the command-line commands that write
(`sync`, `import`, `reindex`) open it themselves when no worker runs, and
fail at once with the owner's name when one does.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.retrieval.embedder import Embedder, default_model_dir
from app.retrieval.index import MessageIndex, open_chroma
from app.settings import Settings
from app.store.db import Store
from app.store.lock import StateLock
from app.sync.indexer import Indexer

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

logger = logging.getLogger(__name__)


@dataclass
class State:
    """What the owner of DATA_DIR holds open."""

    store: Store
    index: MessageIndex
    indexer: Indexer
    lock: StateLock | None
    chroma: ClientAPI

    @classmethod
    async def open(cls, settings: Settings, role: str) -> State:
        """Take the lock, open and migrate the store, load the embedder and open the index."""
        lock: StateLock | None = None
        if _has_local_state(settings):
            lock = StateLock(settings.data_dir, role)
            lock.acquire()
        try:
            store = Store.from_url(settings.database_url)
            await store.connect()
            applied = await store.migrate()
            if applied:
                logger.info("database migrated to version %d", applied[-1])
            embedder = Embedder(default_model_dir(), cache_dir=settings.model_cache_dir)
            await asyncio.to_thread(embedder.load)
            client = open_chroma(
                None if settings.chroma_url else settings.chroma_path, settings.chroma_url
            )
            index = MessageIndex(client, embedder)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(
            store=store, index=index, indexer=Indexer(store, index), lock=lock, chroma=client
        )

    async def close(self) -> None:
        """Close the store and the index, and give up the lock."""
        await self.store.close()
        # Chroma keeps one client per path in the process until its last user closes it
        # (Client.close exists in chromadb 1.x; the ClientAPI type does not declare it).
        close = getattr(self.chroma, "close", None)
        if callable(close):
            close()
        if self.lock is not None:
            self.lock.release()


def _has_local_state(settings: Settings) -> bool:
    """Whether this process would write files under DATA_DIR (SQLite or embedded Chroma)."""
    return settings.database_url.startswith("sqlite") or settings.chroma_url is None
