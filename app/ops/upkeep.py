"""Upkeep of the worker's state: the daily integrity check and the weekly VACUUM.

The worker runs both as cron jobs; the integrity check's result is written to
Redis, where /health shows it with a hint of what to do when it failed.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from app.errors import BotError
from app.ops.backup import INTEGRITY_ROWS
from app.retrieval.index import MessageIndex
from app.store.db import Store
from app.store.lexical import rebuild_lexical
from app.store.models import IndexState
from app.sync.indexer import Indexer

logger = logging.getLogger(__name__)


async def rebuild_index(
    store: Store,
    index: MessageIndex,
    indexer: Indexer,
    on_indexed: Callable[[int], None] | None = None,
) -> str:
    """Rebuild the lexical and the vector index from the store, the source of truth.

    The caller holds the maintenance lease, so no sync writes meanwhile. Workers answering
    meanwhile reopen the recreated collection by name and find more as it fills.
    """
    started = time.monotonic()
    async with store.database.transaction():
        await rebuild_lexical(store.database)
    await index.areset()
    await store.reset_index_state()
    counts = await indexer.drain(on_indexed)
    total = await index.acount()
    return (
        f"reindexed {counts.embedded} messages; the index holds {total}; "
        f"{time.monotonic() - started:.1f} s"
    )


async def check_integrity(store: Store, index: MessageIndex) -> dict[str, Any]:
    """PRAGMA integrity_check of the database and a probe of the index, for /health."""
    result: dict[str, Any] = {"checked_at": datetime.now(UTC).isoformat(timespec="seconds")}
    problems: list[str] = []
    if store.is_sqlite:
        try:
            rows = await store.database.fetch_all(f"PRAGMA integrity_check({INTEGRITY_ROWS})")
            found = [str(row[0]) for row in rows]
        except sqlite3.DatabaseError as exc:
            found = [str(exc)]
        if found != ["ok"]:
            problems.append("database: " + "; ".join(found[:3]))
    try:
        result["index_vectors"] = await index.acount()
        result["indexed_rows"] = await store.count_live(index_state=IndexState.INDEXED)
    except BotError as exc:
        problems.append(f"index: {exc}")
    result["ok"] = not problems
    if problems:
        result["error"] = " | ".join(problems)[:500]
        result["hint"] = (
            "restore the latest backup (python -m app restore), or rebuild the index from the "
            "database (python -m app reindex) when only the index is damaged"
        )
        logger.error("integrity check failed: %s", result["error"])
    else:
        logger.info("integrity check passed")
    return result


async def vacuum(store: Store) -> str:
    """Rebuild the SQLite file compactly and refresh the planner's statistics."""
    started = time.monotonic()
    if store.is_sqlite:
        await store.database.execute("VACUUM")
    await store.database.execute("ANALYZE")
    return f"vacuumed and analyzed in {time.monotonic() - started:.1f} s"
