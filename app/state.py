"""The worker's state: the store, the vector index and the lock that gives one process both.

The worker opens it at start-up; the command-line commands that write
(`sync`, `import`, `reindex`) open it themselves when no worker runs, and
fail at once with the owner's name when one does.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import BotError
from app.retrieval.embedder import Embedder, default_model_dir
from app.retrieval.index import (
    CHROMA_FILE,
    MessageIndex,
    VectorIndexError,
    close_chroma,
    open_chroma,
)
from app.settings import Settings
from app.store.db import Store
from app.store.lock import StateLock
from app.sync.indexer import Indexer

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

logger = logging.getLogger(__name__)

REINDEX_HINT = "rebuild the index from the database: python -m app reindex"


@dataclass
class State:
    """What the owner of DATA_DIR holds open."""

    store: Store
    index: MessageIndex
    indexer: Indexer
    lock: StateLock | None
    chroma: ClientAPI
    # The embedded Chroma directory; None when the index is a Chroma server.
    index_path: Path | None = None

    @classmethod
    async def open(
        cls, settings: Settings, role: str, *, discard_damaged_index: bool = False
    ) -> State:
        """Take the lock, open and migrate the store, load the embedder and open the index.

        With `discard_damaged_index` (a rebuild), an embedded index that cannot be opened
        is moved aside to `CHROMA_PATH.damaged` and a new, empty one is created.
        """
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
            index_path = None if settings.chroma_url else settings.chroma_path
            try:
                client, index = _open_index(index_path, settings.chroma_url, embedder)
            except VectorIndexError as exc:
                if index_path is None or not discard_damaged_index:
                    raise VectorIndexError(f"{exc}; if it is damaged, {REINDEX_HINT}") from exc
                _move_aside(index_path, exc)
                client, index = _open_index(index_path, None, embedder)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(
            store=store,
            index=index,
            indexer=Indexer(store, index),
            lock=lock,
            chroma=client,
            index_path=index_path,
        )

    async def check_index(self) -> dict[str, Any]:
        """A cheap look at the index for /health: its files are there, it answers, and it
        holds at least the vectors the store's outbox says were written (two counts)."""
        if self.index_path is not None and not (self.index_path / CHROMA_FILE).is_file():
            return _broken(f"the index directory {self.index_path} is gone")
        try:
            # Rows are marked indexed only after their vectors are written, so counting the
            # rows first never finds fewer vectors than rows in a healthy index; a deletion
            # landing between the two counts can, hence the second look.
            for _ in range(2):
                rows = await self.store.count_indexed()
                vectors = await self.index.acount()
                if vectors >= rows:
                    return {"ok": True, "vectors": vectors}
        except BotError as exc:
            return _broken(str(exc)[:300])
        return _broken(f"the index holds {vectors} vectors but {rows} messages were indexed")

    async def close(self) -> None:
        """Close the store and the index, and give up the lock."""
        await self.store.close()
        _close_client(self.chroma)
        if self.lock is not None:
            self.lock.release()


def _broken(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error, "hint": REINDEX_HINT}


def _open_index(
    path: Path | None, url: str | None, embedder: Embedder
) -> tuple[ClientAPI, MessageIndex]:
    client = open_chroma(path, url)
    try:
        return client, MessageIndex(client, embedder)
    except BaseException:
        _close_client(client)
        raise


def _close_client(client: ClientAPI) -> None:
    close_chroma(client)


def _move_aside(path: Path, reason: BotError) -> None:
    """Keep a damaged index directory for inspection, out of the way of a new one."""
    aside = path.with_name(path.name + ".damaged")
    shutil.rmtree(aside, ignore_errors=True)
    path.rename(aside)
    logger.warning("the index could not be opened (%s); moved it to %s", reason, aside)


def _has_local_state(settings: Settings) -> bool:
    """Whether this process would write files under DATA_DIR (SQLite or embedded Chroma)."""
    return settings.database_url.startswith("sqlite") or settings.chroma_url is None
