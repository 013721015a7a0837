"""The SQL store's front: `Store` connects, migrates and carries every query of the bot's state.

The queries live by concern in the modules `Store` is made of: `app.store.messages` (pages of
history written with their channel's cursor in one transaction, and the reads of messages),
`app.store.outbox` (the `index_state` column through which the vector index follows the store),
`app.store.channels` (channels, their cursors and access, and roles), `app.store.lexical` and
`app.store.lexical_search` (the words of every live message, searched with BM25),
`app.store.privacy` (members who opted out, and their messages kept without text) and
`app.store.audit`.
They share one `databases.Database`, so callers hold a single `Store` and one transaction can
span concerns (a page and its channel's cursor). This module owns the connection: SQLite's
per-connection pragmas and its WAL journal, so that readers never block the one writer; on
Postgres, a missing driver or a server that cannot be reached is one line naming DATABASE_URL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from databases import Database

from app.errors import SettingsError
from app.store.audit import AuditQueries
from app.store.channels import ChannelQueries
from app.store.errors import full_translated
from app.store.lexical_search import IndexStats, LexicalQueries
from app.store.messages import MessageQueries
from app.store.migrations import MIGRATIONS, Migration, apply_migrations
from app.store.outbox import OutboxQueries
from app.store.pool import SQLiteDatabase
from app.store.privacy import PrivacyQueries

BUSY_TIMEOUT_MS = 5000


class SQLiteConnection(sqlite3.Connection):
    """Sets the per-connection pragmas on every connection the SQLite backend opens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.execute("PRAGMA foreign_keys = ON")
        # Safe with WAL: a crash loses at most the last commits, never consistency.
        self.execute("PRAGMA synchronous = NORMAL")


def open_database(url: str) -> Database:
    """A `databases.Database` for `url`, with busy timeout and foreign keys on SQLite."""
    if url.startswith("sqlite"):
        return SQLiteDatabase(url, factory=SQLiteConnection)
    try:
        return Database(url)
    except ImportError as exc:  # the backend imports its driver (asyncpg) here
        raise SettingsError(
            f"DATABASE_URL: the Postgres driver {exc.name or 'asyncpg'} is not installed; "
            "install the pinned dependencies (make, or pip install asyncpg)"
        ) from exc


def redacted(url: str) -> str:
    """A database URL without its password, fit for a message or a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class Store(
    MessageQueries, OutboxQueries, ChannelQueries, AuditQueries, LexicalQueries, PrivacyQueries
):
    """Reads and writes of the bot's SQL state, over a `databases.Database`."""

    def __init__(self, database: Database, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self._database = database
        self._migrations = migrations
        self._owns_connection = False
        self._index_stats = IndexStats()

    @classmethod
    def from_url(cls, url: str) -> Store:
        """A store over a new database for `url` (SQLite or Postgres)."""
        return cls(open_database(url))

    @property
    def database(self) -> Database:
        """The underlying database, for callers that add their own tables."""
        return self._database

    @property
    def is_sqlite(self) -> bool:
        """Whether the backend is SQLite."""
        return str(self._database.url.dialect) == "sqlite"

    async def connect(self) -> None:
        """Connect (unless the database was handed in connected) and switch SQLite to WAL."""
        if not self._database.is_connected:
            if self.is_sqlite:
                path = str(self._database.url.database)
                if path and not path.startswith(":memory:"):
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                await self._database.connect()
            else:
                await self._connect_server()
            self._owns_connection = True
        if self.is_sqlite:
            # Persistent in the file; concurrent readers never block the writer.
            await self._database.fetch_val("PRAGMA journal_mode = WAL")

    async def _connect_server(self) -> None:
        import asyncpg  # present: `open_database` could not have built the backend otherwise

        try:
            await self._database.connect()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Refused, unknown host, timed out, wrong password, no such database: all are
            # the owner's to fix in the URL or on the server.
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise SettingsError(
                f"DATABASE_URL: cannot connect to {redacted(str(self._database.url))}: {reason}"
            ) from exc

    async def close(self) -> None:
        """Disconnect, if this store connected."""
        if self._owns_connection:
            await self._database.disconnect()
            self._owns_connection = False

    async def __aenter__(self) -> Store:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @full_translated
    async def migrate(self) -> list[int]:
        """Apply pending schema migrations; return the versions applied now."""
        return await apply_migrations(self._database, self._migrations)
