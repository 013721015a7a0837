"""Upkeep of the worker's state: the daily integrity check and the weekly VACUUM.

The worker runs both as cron jobs; the integrity check's result is written to
Redis, where /health shows it with a hint of what to do when it failed.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

from app.errors import BotError
from app.ops.backup import INTEGRITY_ROWS
from app.retrieval.index import MessageIndex
from app.store.db import Store
from app.store.models import IndexState

logger = logging.getLogger(__name__)


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
