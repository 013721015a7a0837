"""The store's one error a caller must tell apart: the database is full.

Each backend says "disk full" its own way (SQLite's SQLITE_FULL result code, Postgres's
SQLSTATE 53100); `full_translated` wraps every writing method of the store so that callers see
one `StoreFullError` with a line a person can act on. The failed transaction has rolled back by
then, so a sync stopped this way resumes from its stored cursor once there is room again.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from app.errors import BotError

# Postgres's SQLSTATE for "disk full".
_PG_DISK_FULL = "53100"

P = ParamSpec("P")
R = TypeVar("R")


class StoreFullError(BotError):
    """The database could not grow: its disk (or its size limit) is full."""


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return getattr(exc, "sqlstate", None) == _PG_DISK_FULL


def full_translated(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn the backend's "disk full" into one StoreFullError line; the transaction rolled back."""

    @functools.wraps(method)
    async def write(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            if not _is_full(exc):
                raise
            raise StoreFullError(
                f"the database is full ({exc}): free disk space, then run again; "
                "a sync resumes where it stopped"
            ) from exc

    return write
