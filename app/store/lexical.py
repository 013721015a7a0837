"""The lexical index: every live message's words, searchable with BM25, written with the rows.

Beside the vectors, the words themselves: a member asking about "the Grafana
dashboard" wants the message that says "Grafana", which a 384-dimension sentence
vector often ranks below small talk. Each live message has one row with five
columns, as measured on long real conversations (bench/quality.py):

- `author`: the author's display name;
- `body`: the content;
- `alt`: what the message shows besides its text: attachments' alt text and
  file names, embeds' titles and descriptions;
- `date`: the day it was sent, as people write it ("8 May 2023"), so "in May
  2023" in a question matches;
- `ctx`: the messages just before and after it (not across a silence of over an
  hour) and the one it replies to, weighted at 0.35: the answer is often "it was
  great!" right after the question that holds the words.

On SQLite this is an FTS5 table (porter stemming) keyed by the message id; on
Postgres a `tsvector` per message with a GIN index. Rows are rewritten in the
same transaction as the messages they describe (a page, an edit, a deletion),
together with their neighbours, whose context changed: a search never sees a
deleted message or an edit's old words. A withheld message (its author opted out, see
`app.store.privacy`) has no row and is no one's context. The searching is in
`app.store.lexical_search`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from databases import Database

from app.discord.snowflakes import snowflake_time
from app.store.models import StoredMessage
from app.store.rows import MESSAGE_SELECT, chunks, execute_many, in_clause, message_from_row

# No context across a silence longer than this: it is another conversation.
CONTEXT_GAP: Final = 3600.0
# Characters of a replied-to message's text taken as context.
_REPLY_CHARS: Final = 300


@dataclass(frozen=True, slots=True)
class LexicalRow:
    """The searchable columns of one message."""

    id: int
    channel_id: str
    author: str
    body: str
    alt: str
    date: str
    ctx: str


def spoken_date(message: StoredMessage) -> str:
    """The day a message was sent, as people write it: "8 May 2023"."""
    return f"{message.timestamp.day} {message.timestamp:%B %Y}"


async def refresh_lexical(database: Database, channel_id: str, low: int, high: int) -> int:
    """Rewrite the rows of a channel's messages from `low` to `high` and their neighbours'.

    Call inside the transaction that changed those messages (a page is one range and costs a
    handful of statements); returns the rows written.
    """
    # The live messages from the one before `low` to the one after `high`, and one more on
    # each side: the outer two are only context for their neighbours.
    outer = []
    for op, order, bound in (("<", "DESC", low), (">", "ASC", high)):
        found = await database.fetch_all(
            f"SELECT id FROM messages WHERE channel_id = :channel_id AND id {op} :bound "
            f"AND deleted = FALSE AND withheld = FALSE ORDER BY id {order} LIMIT 2",
            {"channel_id": channel_id, "bound": bound},
        )
        outer.append([int(r["id"]) for r in found])
    first = outer[0][-1] if outer[0] else low
    last = outer[1][-1] if outer[1] else high
    rows = await database.fetch_all(
        f"{MESSAGE_SELECT} WHERE channel_id = :channel_id AND id >= :first AND id <= :last "
        "AND deleted = FALSE AND withheld = FALSE ORDER BY id",
        {"channel_id": channel_id, "first": first, "last": last},
    )
    messages = [message_from_row(r) for r in rows]
    # Rows to rewrite: from the neighbour before `low` to the one after `high`.
    rewrite_low = outer[0][0] if outer[0] else low
    rewrite_high = outer[1][0] if outer[1] else high
    parents = [m.reply_to_id for m in messages if m.reply_to_id]
    replied = {m.id: m for m in await _live(database, parents)}
    # Sentinels at both ends, so every message in the range has two neighbours.
    made = lexical_rows([None, *messages, None], replied)
    # The outer two were only context, unless they are the channel's first or last.
    keep = [r for r in made if rewrite_low <= r.id <= rewrite_high]
    postgres = is_postgres(database)
    key = "id" if postgres else "rowid"
    await database.execute(
        f"DELETE FROM message_text WHERE channel_id = :channel_id AND {key} >= :low "
        f"AND {key} <= :high",
        {"channel_id": channel_id, "low": rewrite_low, "high": rewrite_high},
    )
    if keep:
        statement = _PG_INSERT if postgres else _SQLITE_INSERT
        await execute_many(database, statement, [_params(r) for r in keep])
    return len(keep)


async def rebuild_lexical(database: Database) -> int:
    """Rebuild every row from the messages (a migration, or a repair); returns the rows."""
    await database.execute("DELETE FROM message_text")
    channels = await database.fetch_all("SELECT DISTINCT channel_id FROM messages")
    total = 0
    for row in channels:
        channel_id = str(row["channel_id"])
        low = -1
        while True:
            # In slices, so a large channel never sits in memory whole.
            ids = await database.fetch_all(
                "SELECT id FROM messages WHERE channel_id = :channel_id AND id > :low "
                "AND deleted = FALSE AND withheld = FALSE ORDER BY id LIMIT 2000",
                {"channel_id": channel_id, "low": low},
            )
            if not ids:
                break
            first, last = int(ids[0]["id"]), int(ids[-1]["id"])
            total += await refresh_lexical(database, channel_id, first, last)
            low = last
    return total


async def _live(database: Database, ids: Iterable[int]) -> list[StoredMessage]:
    found: list[StoredMessage] = []
    for chunk in chunks(ids):
        clause, values = in_clause("id", chunk)
        rows = await database.fetch_all(
            f"{MESSAGE_SELECT} WHERE deleted = FALSE AND withheld = FALSE AND {clause}", values
        )
        found.extend(message_from_row(r) for r in rows)
    return found


def is_postgres(database: Database) -> bool:
    return not str(database.url.dialect).startswith("sqlite")


_SQLITE_INSERT: Final = (
    "INSERT INTO message_text (rowid, channel_id, scope, author, body, alt, date, ctx) "
    "VALUES (:id, :channel_id, 'c' || :channel_id, :author, :body, :alt, :date, :ctx)"
)


# Postgres weights: A for the message itself, D (0.1 by default, 0.35 set at query time) for
# its context.
_PG_INSERT: Final = (
    "INSERT INTO message_text (id, channel_id, document) VALUES (:id, :channel_id, "
    "setweight(to_tsvector('english', :author || ' ' || :body || ' ' || :alt || ' ' || :date), "
    "'A') || setweight(to_tsvector('english', :ctx), 'D'))"
)


def lexical_rows(
    messages: Sequence[StoredMessage | None], replied: Mapping[int, StoredMessage]
) -> list[LexicalRow]:
    """Rows for consecutive live messages of one channel in id order, with their context.

    The first and last entries are only context for their neighbours (None: no message
    there); `replied` holds the messages some of them reply to.
    """
    rows = []
    for i in range(1, len(messages) - 1):
        message = messages[i]
        if message is None:
            continue
        neighbours = [m for m in (messages[i - 1], messages[i + 1]) if m is not None]
        context = [
            m.search_text
            for m in neighbours
            if abs(snowflake_time(m.id) - snowflake_time(message.id)) <= CONTEXT_GAP
        ]
        parent = replied.get(message.reply_to_id or 0)
        if parent is not None:
            context.append(parent.search_text[:_REPLY_CHARS])
        rows.append(
            LexicalRow(
                id=message.id,
                channel_id=message.channel_id,
                author=message.author_name,
                body=message.content,
                alt=message.extra_text,
                date=spoken_date(message),
                ctx=" || ".join(context),
            )
        )
    return rows


def _params(row: LexicalRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "channel_id": row.channel_id,
        "author": row.author,
        "body": row.body,
        "alt": row.alt,
        "date": row.date,
        "ctx": row.ctx,
    }
