"""The SQL store: messages with their index outbox, channels with sync cursors, and roles.

Every page of history is written in one transaction together with the channel's cursor, so a
crash or kill at any point leaves either the whole page and its cursor or neither: the next run
resumes from the stored cursor with no gap and no duplicate. The `index_state` column is an
outbox for the vector index: rows are written `pending` (or `pending_removal` when deleted) in
the same transaction, and the indexer marks them once the vector index agrees.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar

from databases import Database

from app.audit import AuditEntry
from app.errors import BotError
from app.store.migrations import MIGRATIONS, Migration, apply_migrations
from app.store.models import (
    Attachment,
    AuthorCount,
    ChannelAccess,
    ChannelRecord,
    ChannelState,
    Embed,
    IndexState,
    PageResult,
    PermissionOverwrite,
    RoleRecord,
    Stats,
    StoredMessage,
    format_time,
    parse_time,
)

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
# Rows per multi-row INSERT: 17 columns x 50 rows stays far below every backend's bind limit.
_INSERT_CHUNK = 50
# Ids per `IN (...)` list.
_IN_CHUNK = 500

_MESSAGE_COLUMNS = (
    "id",
    "channel_id",
    "guild_id",
    "author_id",
    "author_name",
    "author_is_bot",
    "content",
    "timestamp",
    "edited",
    "edited_at",
    "deleted",
    "message_type",
    "reply_to_id",
    "attachments",
    "embeds",
    "content_hash",
    "index_state",
)
_MESSAGE_SELECT = f"SELECT {', '.join(_MESSAGE_COLUMNS)} FROM messages"
_CHANNEL_COLUMNS = ("id", "guild_id", "name", "type", "parent_id", "position")
_CHANNEL_SELECT = f"SELECT {', '.join(_CHANNEL_COLUMNS)}, permission_overwrites FROM channels"
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


def _full_translated(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
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
        return Database(url, factory=SQLiteConnection)
    return Database(url)


class Store:
    """Reads and writes of the bot's SQL state, over a `databases.Database`."""

    def __init__(self, database: Database, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self._database = database
        self._migrations = migrations
        self._owns_connection = False

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
            self._owns_connection = True
        if self.is_sqlite:
            # Persistent in the file; concurrent readers never block the writer.
            await self._database.fetch_val("PRAGMA journal_mode = WAL")

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

    @_full_translated
    async def migrate(self) -> list[int]:
        """Apply pending schema migrations; return the versions applied now."""
        return await apply_migrations(self._database, self._migrations)

    # Audit trail

    @_full_translated
    async def record_audit(self, entry: AuditEntry) -> None:
        """Write (or, for a retried job, overwrite) the audit row of one invocation."""
        await self._database.execute(
            "INSERT INTO audit_log (interaction_id, at, guild_id, channel_id, user_id, command, "
            "outcome, latency_ms) VALUES (:interaction_id, :at, :guild_id, :channel_id, "
            ":user_id, :command, :outcome, :latency_ms) ON CONFLICT (interaction_id) DO UPDATE "
            "SET at = excluded.at, outcome = excluded.outcome, latency_ms = excluded.latency_ms",
            {
                "interaction_id": entry.interaction_id,
                "at": format_time(entry.at),
                "guild_id": entry.guild_id,
                "channel_id": entry.channel_id,
                "user_id": entry.user_id,
                "command": entry.command,
                "outcome": entry.outcome,
                "latency_ms": entry.latency_ms,
            },
        )

    async def recent_audit(self, limit: int) -> list[AuditEntry]:
        """The latest `limit` audit rows, newest first."""
        rows = await self._database.fetch_all(
            "SELECT interaction_id, at, guild_id, channel_id, user_id, command, outcome, "
            "latency_ms FROM audit_log ORDER BY at DESC, interaction_id DESC LIMIT :limit",
            {"limit": max(0, limit)},
        )
        return [
            AuditEntry(
                interaction_id=str(row["interaction_id"]),
                at=parse_time(row["at"]),
                guild_id=row["guild_id"],
                channel_id=str(row["channel_id"]),
                user_id=str(row["user_id"]),
                command=str(row["command"]),
                outcome=str(row["outcome"]),
                latency_ms=int(row["latency_ms"]),
            )
            for row in rows
        ]

    # Messages: writes

    @_full_translated
    async def save_page(
        self,
        channel_id: str,
        messages: Iterable[StoredMessage],
        *,
        newest_id: int | None = None,
        backfill_before: int | None = None,
        backfill_complete: bool | None = None,
    ) -> PageResult:
        """Write one page of a channel's messages and its cursor fields in one transaction.

        New messages are inserted `pending`; a stored message whose embedded text changed (or
        that had been marked deleted) is updated and set `pending` again; other stored fields
        that changed are updated without touching the index state; identical rows are left
        alone. Cursor fields left as None keep their stored value.
        """
        page: dict[int, StoredMessage] = {}
        for message in messages:
            if message.channel_id != channel_id:
                raise ValueError(f"message {message.id} is in channel {message.channel_id}")
            page[message.id] = message
        guild_id = next((m.guild_id for m in page.values() if m.guild_id), None)
        async with self._database.transaction():
            # The cursor is written first so the transaction takes SQLite's write lock before
            # it reads (a read-then-write transaction cannot wait on a busy writer).
            await self._write_cursor(
                channel_id, guild_id, newest_id, backfill_before, backfill_complete
            )
            stored = await self._stored_rows(list(page))
            new = [m for i, m in page.items() if i not in stored]
            edited: list[int] = []
            unchanged: list[int] = []
            for message_id, message in page.items():
                if message_id not in stored:
                    continue
                if await self._update_if_changed(message, stored[message_id]):
                    edited.append(message_id)
                else:
                    unchanged.append(message_id)
            await self._insert_messages(new)
        result = PageResult(
            new=tuple(sorted(m.id for m in new)),
            edited=tuple(sorted(edited)),
            unchanged=tuple(sorted(unchanged)),
        )
        logger.debug(
            "saved page of channel %s: %d new, %d edited, %d unchanged",
            channel_id,
            len(result.new),
            len(result.edited),
            len(result.unchanged),
        )
        return result

    @_full_translated
    async def mark_deleted(self, channel_id: str, ids: Iterable[int]) -> None:
        """Mark messages of a channel deleted and queue their removal from the vector index."""
        for chunk in _chunks(ids):
            clause, values = _in_clause("id", chunk)
            await self._database.execute(
                "UPDATE messages SET deleted = TRUE, index_state = :state "
                f"WHERE channel_id = :channel_id AND deleted = FALSE AND {clause}",
                {**values, "state": IndexState.PENDING_REMOVAL.value, "channel_id": channel_id},
            )

    # Messages: the index outbox

    async def pending_index(self, limit: int) -> list[StoredMessage]:
        """Live messages waiting to be (re)embedded, oldest id first."""
        rows = await self._database.fetch_all(
            f"{_MESSAGE_SELECT} WHERE index_state = :state AND deleted = FALSE "
            "ORDER BY id LIMIT :limit",
            {"state": IndexState.PENDING.value, "limit": limit},
        )
        return [_message_from_row(row) for row in rows]

    async def pending_removal(self, limit: int) -> list[int]:
        """Ids of deleted messages waiting to be removed from the vector index."""
        rows = await self._database.fetch_all(
            "SELECT id FROM messages WHERE index_state = :state ORDER BY id LIMIT :limit",
            {"state": IndexState.PENDING_REMOVAL.value, "limit": limit},
        )
        return [int(row["id"]) for row in rows]

    @_full_translated
    async def mark_indexed(
        self, ids: Iterable[int], *, expected_hashes: Mapping[int, str] | None = None
    ) -> None:
        """Mark pending live messages indexed.

        With `expected_hashes` (id -> the content hash that was embedded), a message edited
        since it was read keeps its pending state, so the newer text gets embedded next time.
        """
        if expected_hashes is None:
            for chunk in _chunks(ids):
                clause, values = _in_clause("id", chunk)
                await self._database.execute(
                    "UPDATE messages SET index_state = :indexed "
                    f"WHERE index_state = :pending AND deleted = FALSE AND {clause}",
                    {**values, "indexed": _STATES["indexed"], "pending": _STATES["pending"]},
                )
            return
        async with self._database.transaction():
            await self._execute_many(
                "UPDATE messages SET index_state = :indexed WHERE id = :id "
                "AND index_state = :pending AND deleted = FALSE AND content_hash = :hash",
                [
                    {
                        "indexed": _STATES["indexed"],
                        "pending": _STATES["pending"],
                        "id": message_id,
                        "hash": expected_hashes[message_id],
                    }
                    for message_id in ids
                ],
            )

    @_full_translated
    async def mark_removed(self, ids: Iterable[int]) -> None:
        """Mark deleted messages as removed from the vector index."""
        for chunk in _chunks(ids):
            clause, values = _in_clause("id", chunk)
            await self._database.execute(
                f"UPDATE messages SET index_state = :removed "
                f"WHERE index_state = :pending_removal AND {clause}",
                {
                    **values,
                    "removed": _STATES["removed"],
                    "pending_removal": _STATES["pending_removal"],
                },
            )

    @_full_translated
    async def reset_index_state(self) -> None:
        """Set every live message back to pending, for a full rebuild of the vector index."""
        await self._database.execute(
            "UPDATE messages SET index_state = :pending WHERE deleted = FALSE",
            {"pending": IndexState.PENDING.value},
        )

    async def count_indexed(self) -> int:
        """Number of messages the vector index holds by the outbox (reads only its index)."""
        count = await self._database.fetch_val(
            "SELECT COUNT(*) FROM messages WHERE index_state = :state",
            {"state": IndexState.INDEXED.value},
        )
        return int(count)

    async def count_live(
        self,
        channel_ids: Sequence[str] | None = None,
        *,
        index_state: IndexState | None = None,
    ) -> int:
        """Number of live messages, optionally in some channels and/or in one index state."""
        where = ["deleted = FALSE"]
        values: dict[str, Any] = {}
        if channel_ids is not None:
            if not channel_ids:
                return 0
            clause, values = _in_clause("channel_id", channel_ids)
            where.append(clause)
        if index_state is not None:
            where.append("index_state = :index_state")
            values["index_state"] = index_state.value
        count = await self._database.fetch_val(
            f"SELECT COUNT(*) FROM messages WHERE {' AND '.join(where)}", values
        )
        return int(count)

    # Messages: reads (deleted messages never come back)

    async def live_ids_since(self, channel_id: str, since_id: int) -> dict[int, str]:
        """Live message ids after `since_id` in a channel, with their content hashes."""
        rows = await self._database.fetch_all(
            "SELECT id, content_hash FROM messages WHERE channel_id = :channel_id "
            "AND id > :since AND deleted = FALSE ORDER BY id",
            {"channel_id": channel_id, "since": since_id},
        )
        return {int(row["id"]): str(row["content_hash"]) for row in rows}

    async def get_messages(self, ids: Iterable[int]) -> list[StoredMessage]:
        """The live messages among `ids`, by id."""
        found: list[StoredMessage] = []
        for chunk in _chunks(ids):
            clause, values = _in_clause("id", chunk)
            rows = await self._database.fetch_all(
                f"{_MESSAGE_SELECT} WHERE deleted = FALSE AND {clause}", values
            )
            found.extend(_message_from_row(row) for row in rows)
        return sorted(found, key=lambda m: m.id)

    async def neighbours(
        self, channel_id: str, message_id: int, before: int = 2, after: int = 2
    ) -> list[StoredMessage]:
        """Up to `before` live messages before `message_id`, it, and up to `after` after, by id.

        Bot messages are included; `StoredMessage.author_is_bot` lets the caller drop them.
        """
        values = {"channel_id": channel_id, "id": message_id}
        earlier = await self._database.fetch_all(
            f"{_MESSAGE_SELECT} WHERE channel_id = :channel_id AND id < :id AND deleted = FALSE "
            "ORDER BY id DESC LIMIT :limit",
            {**values, "limit": before},
        )
        later = await self._database.fetch_all(
            f"{_MESSAGE_SELECT} WHERE channel_id = :channel_id AND id >= :id AND deleted = FALSE "
            "ORDER BY id LIMIT :limit",
            {**values, "limit": after + 1},
        )
        if not later or int(later[0]["id"]) != message_id:
            later = later[:after]  # the anchor is gone: `after` messages after it, not one more
        return [_message_from_row(row) for row in [*reversed(earlier), *later]]

    async def recent_messages(self, channel_id: str, count: int) -> list[StoredMessage]:
        """The `count` most recent live messages of a channel, oldest first."""
        rows = await self._database.fetch_all(
            f"{_MESSAGE_SELECT} WHERE channel_id = :channel_id AND deleted = FALSE "
            "ORDER BY id DESC LIMIT :limit",
            {"channel_id": channel_id, "limit": count},
        )
        return [_message_from_row(row) for row in reversed(rows)]

    async def channel_stats(self, channel_ids: Sequence[str], top: int = 5) -> Stats:
        """Live message count, first and last time, and the `top` authors of some channels."""
        if not channel_ids:
            return Stats(count=0, first=None, last=None)
        clause, values = _in_clause("channel_id", channel_ids)
        summary = await self._database.fetch_one(
            "SELECT COUNT(*) AS n, MIN(timestamp) AS first, MAX(timestamp) AS last "
            f"FROM messages WHERE deleted = FALSE AND {clause}",
            values,
        )
        assert summary is not None  # an aggregate always returns one row
        # Both lists bind the same parameter names to the same channel ids.
        m_clause, _ = _in_clause("m.channel_id", channel_ids)
        a_clause, _ = _in_clause("a.channel_id", channel_ids)
        # Ties broken by author id so the answer is stable; the name is the author's latest.
        authors = await self._database.fetch_all(
            "SELECT m.author_id AS author_id, COUNT(*) AS n, "
            "(SELECT a.author_name FROM messages a WHERE a.author_id = m.author_id "
            f"AND a.deleted = FALSE AND {a_clause} ORDER BY a.id DESC LIMIT 1) AS name "
            f"FROM messages m WHERE m.deleted = FALSE AND {m_clause} GROUP BY m.author_id "
            "ORDER BY n DESC, m.author_id LIMIT :top",
            {**values, "top": top},
        )
        return Stats(
            count=int(summary["n"]),
            first=parse_time(summary["first"]) if summary["first"] else None,
            last=parse_time(summary["last"]) if summary["last"] else None,
            top_authors=tuple(
                AuthorCount(str(row["author_id"]), str(row["name"] or ""), int(row["n"]))
                for row in authors
            ),
        )

    async def iter_live_messages(self, batch: int = 500) -> AsyncIterator[list[StoredMessage]]:
        """Every live message in batches by id, for a full rebuild of the vector index."""
        last = -1
        while True:
            rows = await self._database.fetch_all(
                f"{_MESSAGE_SELECT} WHERE id > :last AND deleted = FALSE ORDER BY id LIMIT :n",
                {"last": last, "n": batch},
            )
            if not rows:
                return
            found = [_message_from_row(row) for row in rows]
            yield found
            last = found[-1].id

    # Channels

    @_full_translated
    async def upsert_channels(self, channels: Iterable[ChannelRecord]) -> None:
        """Insert or update channels' descriptions; their sync state is kept."""
        records = list(channels)
        async with self._database.transaction():
            for start in range(0, len(records), _INSERT_CHUNK):
                chunk = records[start : start + _INSERT_CHUNK]
                values: dict[str, Any] = {}
                rows = []
                for i, channel in enumerate(chunk):
                    params = _channel_params(channel)
                    values.update({f"{k}_{i}": v for k, v in params.items()})
                    rows.append("(" + ", ".join(f":{k}_{i}" for k in params) + ")")
                columns = (*_CHANNEL_COLUMNS, "permission_overwrites")
                updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
                await self._database.execute(
                    f"INSERT INTO channels ({', '.join(columns)}) VALUES {', '.join(rows)} "
                    f"ON CONFLICT (id) DO UPDATE SET {updates}",
                    values,
                )

    async def get_channel(self, channel_id: str) -> ChannelRecord | None:
        """One channel's description, or None if unknown."""
        row = await self._database.fetch_one(
            f"{_CHANNEL_SELECT} WHERE id = :id", {"id": channel_id}
        )
        return _channel_from_row(row) if row is not None else None

    async def channels_for_guild(self, guild_id: str) -> list[ChannelRecord]:
        """A guild's channels and threads, by position then id."""
        rows = await self._database.fetch_all(
            f"{_CHANNEL_SELECT} WHERE guild_id = :guild_id ORDER BY position, id",
            {"guild_id": guild_id},
        )
        return [_channel_from_row(row) for row in rows]

    async def threads_of(self, parent_id: str) -> list[ChannelRecord]:
        """The channels whose parent is `parent_id` (threads of a channel or forum)."""
        rows = await self._database.fetch_all(
            f"{_CHANNEL_SELECT} WHERE parent_id = :parent_id ORDER BY id",
            {"parent_id": parent_id},
        )
        return [_channel_from_row(row) for row in rows]

    async def channels_with_access(self, guild_id: str, access: ChannelAccess) -> set[str]:
        """Ids of a guild's channels whose last access status is `access`."""
        rows = await self._database.fetch_all(
            "SELECT id FROM channels WHERE guild_id = :guild_id AND access = :access",
            {"guild_id": guild_id, "access": access.value},
        )
        return {str(row["id"]) for row in rows}

    @_full_translated
    async def set_channel_access(self, channel_id: str, access: ChannelAccess) -> None:
        """Record whether the bot could read a channel."""
        await self._database.execute(
            "INSERT INTO channels (id, access) VALUES (:id, :access) "
            "ON CONFLICT (id) DO UPDATE SET access = excluded.access",
            {"id": channel_id, "access": access.value},
        )

    async def channel_state(self, channel_id: str) -> ChannelState | None:
        """A channel's sync cursor and access status, or None if unknown."""
        row = await self._database.fetch_one(
            "SELECT id, newest_synced_id, backfill_before_id, backfill_complete, "
            "last_synced_at, access FROM channels WHERE id = :id",
            {"id": channel_id},
        )
        if row is None:
            return None
        return ChannelState(
            channel_id=str(row["id"]),
            newest_synced_id=_opt_int(row["newest_synced_id"]),
            backfill_before_id=_opt_int(row["backfill_before_id"]),
            backfill_complete=bool(row["backfill_complete"]),
            last_synced_at=parse_time(row["last_synced_at"]) if row["last_synced_at"] else None,
            access=ChannelAccess(row["access"]),
        )

    # Roles

    @_full_translated
    async def replace_roles(self, guild_id: str, roles: Iterable[RoleRecord]) -> None:
        """Replace all stored roles of a guild with `roles`, in one transaction."""
        records = list(roles)
        for role in records:
            if role.guild_id != guild_id:
                raise ValueError(f"role {role.id} belongs to guild {role.guild_id}")
        async with self._database.transaction():
            await self._database.execute(
                "DELETE FROM roles WHERE guild_id = :guild_id", {"guild_id": guild_id}
            )
            for start in range(0, len(records), _INSERT_CHUNK):
                values: dict[str, Any] = {}
                rows = []
                for i, role in enumerate(records[start : start + _INSERT_CHUNK]):
                    values.update(
                        {
                            f"id_{i}": role.id,
                            f"guild_id_{i}": guild_id,
                            f"name_{i}": role.name,
                            f"permissions_{i}": str(role.permissions),
                            f"position_{i}": role.position,
                        }
                    )
                    rows.append(
                        f"(:id_{i}, :guild_id_{i}, :name_{i}, :permissions_{i}, :position_{i})"
                    )
                await self._database.execute(
                    "INSERT INTO roles (id, guild_id, name, permissions, position) "
                    f"VALUES {', '.join(rows)}",
                    values,
                )

    async def roles_for_guild(self, guild_id: str) -> list[RoleRecord]:
        """A guild's roles, by position then id."""
        rows = await self._database.fetch_all(
            "SELECT id, guild_id, name, permissions, position FROM roles "
            "WHERE guild_id = :guild_id ORDER BY position, id",
            {"guild_id": guild_id},
        )
        return [
            RoleRecord(
                id=str(row["id"]),
                guild_id=str(row["guild_id"]),
                name=str(row["name"]),
                permissions=int(row["permissions"]),
                position=int(row["position"]),
            )
            for row in rows
        ]

    # Helpers of save_page

    async def _write_cursor(
        self,
        channel_id: str,
        guild_id: str | None,
        newest_id: int | None,
        backfill_before: int | None,
        backfill_complete: bool | None,
    ) -> None:
        fields: dict[str, Any] = {}
        if newest_id is not None:
            fields["newest_synced_id"] = newest_id
        if backfill_before is not None:
            fields["backfill_before_id"] = backfill_before
        if backfill_complete is not None:
            fields["backfill_complete"] = backfill_complete
        if fields:
            fields["last_synced_at"] = format_time(datetime.now(UTC))
        columns = ["id", "guild_id", *fields]
        values = {"id": channel_id, "guild_id": guild_id, **fields}
        placeholders = ", ".join(f":{c}" for c in columns)
        updates = [f"{c} = excluded.{c}" for c in fields]
        # A channel first seen through its messages (an import) learns its guild here.
        updates.append("guild_id = COALESCE(channels.guild_id, excluded.guild_id)")
        await self._database.execute(
            f"INSERT INTO channels ({', '.join(columns)}) VALUES ({placeholders}) "
            f"ON CONFLICT (id) DO UPDATE SET {', '.join(updates)}",
            values,
        )

    async def _stored_rows(self, ids: list[int]) -> dict[int, Mapping[str, Any]]:
        stored: dict[int, Mapping[str, Any]] = {}
        for chunk in _chunks(ids):
            clause, values = _in_clause("id", chunk)
            rows = await self._database.fetch_all(
                "SELECT id, content, attachments, embeds, edited, edited_at, deleted, "
                f"content_hash, index_state FROM messages WHERE {clause}",
                values,
            )
            for row in rows:
                stored[int(row["id"])] = dict(row._mapping)
        return stored

    async def _update_if_changed(self, message: StoredMessage, old: Mapping[str, Any]) -> bool:
        params = _message_params(message)
        text_changed = old["content_hash"] != params["content_hash"]
        revived = bool(old["deleted"])
        if text_changed and message.edited_at is None:
            # Discord always stamps edits; a missing stamp still records when we saw it.
            params["edited_at"] = format_time(datetime.now(UTC))
        elif message.edited_at is None:
            params["edited_at"] = old["edited_at"]
        same = (
            not text_changed
            and not revived
            and all(old[c] == params[c] for c in ("content", "attachments", "embeds", "edited_at"))
        )
        if same:
            return False
        state = IndexState.PENDING.value if text_changed or revived else old["index_state"]
        await self._database.execute(
            "UPDATE messages SET content = :content, attachments = :attachments, "
            "embeds = :embeds, content_hash = :content_hash, edited = :edited, "
            "edited_at = :edited_at, deleted = FALSE, index_state = :index_state WHERE id = :id",
            {
                "id": message.id,
                "content": params["content"],
                "attachments": params["attachments"],
                "embeds": params["embeds"],
                "content_hash": params["content_hash"],
                "edited": message.edited or text_changed or bool(old["edited"]),
                "edited_at": params["edited_at"],
                "index_state": state,
            },
        )
        return True

    async def _insert_messages(self, messages: Sequence[StoredMessage]) -> None:
        rows = []
        for message in messages:
            params = _message_params(message)
            params["index_state"] = IndexState.PENDING.value
            rows.append(params)
        await self._execute_many(_MESSAGE_INSERT, rows)

    async def _execute_many(self, query: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run one statement for many rows (named parameters), inside the caller's transaction.

        On SQLite this is sqlite3's own executemany on the transaction's connection: the
        generic path compiles the statement once per row through SQLAlchemy, which cost
        more CPU than the embedding during a sync.
        """
        if not rows:
            return
        if self.is_sqlite:
            raw = self._database.connection().raw_connection
            in_transaction = raw.in_transaction
            try:
                await raw.executemany(query, rows)
            except sqlite3.Error:
                # SQLite may roll the whole transaction back by itself (a full disk can);
                # an empty one in its place lets the caller's ROLLBACK release the connection.
                if in_transaction and not raw.in_transaction:
                    await raw.execute("BEGIN")
                raise
        else:
            await self._database.execute_many(query, list(rows))


_MESSAGE_INSERT: Final = (
    f"INSERT INTO messages ({', '.join(_MESSAGE_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _MESSAGE_COLUMNS)})"
)

_STATES = {
    "pending": IndexState.PENDING.value,
    "indexed": IndexState.INDEXED.value,
    "pending_removal": IndexState.PENDING_REMOVAL.value,
    "removed": IndexState.REMOVED.value,
}


def _message_params(message: StoredMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "channel_id": message.channel_id,
        "guild_id": message.guild_id,
        "author_id": message.author_id,
        "author_name": message.author_name,
        "author_is_bot": message.author_is_bot,
        "content": message.content,
        "timestamp": format_time(message.timestamp),
        "edited": message.edited,
        "edited_at": format_time(message.edited_at) if message.edited_at else None,
        "deleted": message.deleted,
        "message_type": message.message_type,
        "reply_to_id": message.reply_to_id,
        "attachments": _to_json([asdict(a) for a in message.attachments]),
        "embeds": _to_json([asdict(e) for e in message.embeds]),
        "content_hash": message.content_hash,
        "index_state": message.index_state.value,
    }


def _message_from_row(row: Any) -> StoredMessage:
    return StoredMessage(
        id=int(row["id"]),
        channel_id=str(row["channel_id"]),
        guild_id=row["guild_id"],
        author_id=str(row["author_id"]),
        author_name=str(row["author_name"]),
        author_is_bot=bool(row["author_is_bot"]),
        content=str(row["content"]),
        timestamp=parse_time(row["timestamp"]),
        edited=bool(row["edited"]),
        edited_at=parse_time(row["edited_at"]) if row["edited_at"] else None,
        deleted=bool(row["deleted"]),
        message_type=int(row["message_type"]),
        reply_to_id=_opt_int(row["reply_to_id"]),
        attachments=tuple(Attachment(**a) for a in json.loads(row["attachments"] or "[]")),
        embeds=tuple(Embed(**e) for e in json.loads(row["embeds"] or "[]")),
        index_state=IndexState(row["index_state"]),
    )


def _channel_params(channel: ChannelRecord) -> dict[str, Any]:
    return {
        "id": channel.id,
        "guild_id": channel.guild_id,
        "name": channel.name,
        "type": channel.type,
        "parent_id": channel.parent_id,
        "position": channel.position,
        # Bit sets as text: Discord's permission integers outgrow 64-bit columns.
        "permission_overwrites": _to_json(
            [
                {"id": o.id, "type": o.type, "allow": str(o.allow), "deny": str(o.deny)}
                for o in channel.permission_overwrites
            ]
        ),
    }


def _channel_from_row(row: Any) -> ChannelRecord:
    return ChannelRecord(
        id=str(row["id"]),
        guild_id=row["guild_id"],
        name=str(row["name"]),
        type=int(row["type"]),
        parent_id=row["parent_id"],
        position=int(row["position"]),
        permission_overwrites=tuple(
            PermissionOverwrite(
                id=str(o["id"]), type=int(o["type"]), allow=int(o["allow"]), deny=int(o["deny"])
            )
            for o in json.loads(row["permission_overwrites"] or "[]")
        ),
    )


def _to_json(value: object) -> str:
    # Canonical text, so that equal values compare equal as stored strings.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _chunks(ids: Iterable[int]) -> Iterable[list[int]]:
    batch: list[int] = []
    for item in ids:
        batch.append(item)
        if len(batch) == _IN_CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def _in_clause(column: str, items: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`column IN (:p0, :p1, ...)` with its values (never empty: callers skip empty lists)."""
    names = {f"in_{i}": item for i, item in enumerate(items)}
    return f"{column} IN ({', '.join(':' + n for n in names)})", names
