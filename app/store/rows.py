"""How the store's values become SQL rows and back, and how many rows go into one statement.

The query modules (`messages`, `outbox`, `channels`) share these column lists and mappings so
that a message or channel has one row shape everywhere. Lists (attachments, embeds, permission
overwrites) are stored as canonical JSON text, so equal values compare equal as stored strings
and `save_page` can tell an unchanged row without decoding it. Ids and rows are bound in
chunks that stay under every backend's limit on bound parameters.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, Final

from databases import Database

from app.store.models import (
    Attachment,
    ChannelRecord,
    Embed,
    IndexState,
    PermissionOverwrite,
    StoredMessage,
    format_time,
    parse_time,
)

# Rows per multi-row INSERT: 18 columns x 50 rows stays far below every backend's bind limit.
INSERT_CHUNK = 50
# Ids per `IN (...)` list.
_IN_CHUNK = 500
# A named parameter (`:name`, not a `::type` cast).
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")

MESSAGE_COLUMNS = (
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
    "withheld",
)
MESSAGE_SELECT = f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages"
MESSAGE_INSERT: Final = (
    f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in MESSAGE_COLUMNS)})"
)
CHANNEL_COLUMNS = ("id", "guild_id", "name", "type", "parent_id", "position")
CHANNEL_SELECT = f"SELECT {', '.join(CHANNEL_COLUMNS)}, permission_overwrites FROM channels"


def message_params(message: StoredMessage) -> dict[str, Any]:
    """The bind values of a message's row, one per `MESSAGE_COLUMNS`."""
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
        "withheld": message.withheld,
    }


def message_from_row(row: Any) -> StoredMessage:
    """The message of a row selected by `MESSAGE_SELECT`."""
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
        reply_to_id=opt_int(row["reply_to_id"]),
        attachments=tuple(Attachment(**a) for a in json.loads(row["attachments"] or "[]")),
        embeds=tuple(Embed(**e) for e in json.loads(row["embeds"] or "[]")),
        index_state=IndexState(row["index_state"]),
        withheld=bool(row["withheld"]),
    )


def channel_params(channel: ChannelRecord) -> dict[str, Any]:
    """The bind values of a channel's description: `CHANNEL_COLUMNS` and its overwrites."""
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


def channel_from_row(row: Any) -> ChannelRecord:
    """The channel of a row selected by `CHANNEL_SELECT`."""
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


def opt_int(value: Any) -> int | None:
    """An integer column that may be NULL."""
    return None if value is None else int(value)


def chunks(ids: Iterable[int]) -> Iterable[list[int]]:
    """`ids` in lists short enough for one `IN (...)`."""
    batch: list[int] = []
    for item in ids:
        batch.append(item)
        if len(batch) == _IN_CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def in_clause(column: str, items: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`column IN (:p0, :p1, ...)` with its values (never empty: callers skip empty lists)."""
    names = {f"in_{i}": item for i, item in enumerate(items)}
    return f"{column} IN ({', '.join(':' + n for n in names)})", names


async def execute_many(database: Database, query: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run one statement for many rows (named parameters), inside the caller's transaction.

    The generic path compiles and sends the statement once per row through SQLAlchemy, which
    cost more CPU than the embedding during a sync. So on SQLite this is sqlite3's own
    executemany on the transaction's connection, and on Postgres asyncpg's (one prepared
    statement, the rows pipelined), with the parameters numbered as Postgres writes them.
    """
    if not rows:
        return
    if str(database.url.dialect) == "sqlite":
        raw = database.connection().raw_connection
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
        numbered, names = positional(query)
        async with database.connection() as connection:
            await connection.raw_connection.executemany(
                numbered, [tuple(row[name] for name in names) for row in rows]
            )


def positional(query: str) -> tuple[str, list[str]]:
    """`query` with its `:name` parameters as Postgres's `$1, $2, ...`, and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _NAMED.sub(number, query), names


def _to_json(value: object) -> str:
    # Canonical text, so that equal values compare equal as stored strings.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
