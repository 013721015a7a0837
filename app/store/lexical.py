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
`app.store.privacy`) has no row and is no one's context. Part of `Store` (see `app.store.db`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from databases import Database

from app.discord.snowflakes import snowflake_time
from app.store.models import StoredMessage
from app.store.rows import MESSAGE_SELECT, chunks, execute_many, in_clause, message_from_row

# No context across a silence longer than this: it is another conversation.
CONTEXT_GAP: Final = 3600.0
# BM25 weights of the FTS5 columns (channel_id, scope, author, body, alt, date, ctx). The
# first is not indexed; `scope` holds one token per row, "c" + the channel id, so that the
# index itself narrows a search to the permitted channels before ranking anything (at
# 100k messages, ranking every match of common words in all channels took 100 ms).
WEIGHTS: Final = (0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.35)
# Up to this many channels, the FTS5 query itself names them (see `_match`).
_SCOPED_CHANNELS: Final = 8
# Characters of a replied-to message's text taken as context.
_REPLY_CHARS: Final = 300
_PG_WORD: Final = re.compile(r"[^\W_]+")


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


class LexicalQueries:
    """The lexical index's search, and the reads that fusion needs around it."""

    _database: Database

    async def lexical_search(
        self,
        channel_ids: Sequence[str],
        words: Sequence[str],
        limit: int,
        *,
        author_ids: Sequence[str] = (),
        after_id: int | None = None,
        before_id: int | None = None,
    ) -> list[tuple[int, float]]:
        """Up to `limit` (message id, score) of live messages in the channels; best first.

        Any of the words matches (each is quoted: no word is read as query syntax). Scores
        are positive, higher is better, and comparable within one search only. `after_id`
        and `before_id` bound the ids (snowflakes, so times); `author_ids` narrows to authors.
        """
        if not channel_ids or not words or limit <= 0:
            return []
        postgres = _is_postgres(self._database)
        key = "t.id" if postgres else "t.rowid"
        clause, values = in_clause("t.channel_id", channel_ids)
        where = [clause]
        if after_id is not None:
            where.append(f"{key} >= :after_id")
            values["after_id"] = after_id
        if before_id is not None:
            where.append(f"{key} < :before_id")
            values["before_id"] = before_id
        if author_ids:
            names = {f"author_{i}": author for i, author in enumerate(author_ids)}
            listed = ", ".join(":" + name for name in names)
            where.append(f"{key} IN (SELECT m.id FROM messages m WHERE m.author_id IN ({listed}))")
            values.update(names)
        if postgres:
            terms = [t for w in words for t in _PG_WORD.findall(w.lower())]
            if not terms:
                return []
            rows = await self._database.fetch_all(
                # Weights of D, C, B, A: context is D, the message itself A.
                "SELECT t.id AS id, ts_rank('{0.35, 0.35, 0.35, 1.0}', t.document, q, 1) "
                "AS score "
                "FROM message_text t, to_tsquery('english', :query) q "
                f"WHERE t.document @@ q AND {' AND '.join(where)} "
                "ORDER BY score DESC LIMIT :limit",
                {
                    **values,
                    "query": " | ".join(dict.fromkeys(terms)),
                    "limit": limit,
                },
            )
        else:
            weights = ", ".join(str(w) for w in WEIGHTS)
            rows = await self._database.fetch_all(
                f"SELECT t.rowid AS id, -bm25(message_text, {weights}) AS score "
                "FROM message_text t WHERE message_text MATCH :match "
                f"AND {' AND '.join(where)} ORDER BY bm25(message_text, {weights}) LIMIT :limit",
                {**values, "match": _match(channel_ids, words), "limit": limit},
            )
        return [(int(r["id"]), float(r["score"])) for r in rows]

    async def channel_authors(self, channel_ids: Sequence[str]) -> dict[str, str]:
        """Author id to display name (their latest) of the live messages in the channels."""
        if not channel_ids:
            return {}
        clause, values = in_clause("channel_id", channel_ids)
        rows = await self._database.fetch_all(
            "SELECT author_id, MAX(author_name) AS name FROM messages "
            f"WHERE {clause} AND deleted = FALSE AND withheld = FALSE GROUP BY author_id",
            values,
        )
        return {str(r["author_id"]): str(r["name"] or "") for r in rows}

    async def neighbour_ids(self, ids: Sequence[int]) -> dict[int, tuple[int, ...]]:
        """Each message's live neighbours before and after it in its channel, in the same
        conversation (no silence over `CONTEXT_GAP` between them)."""
        found: dict[int, tuple[int, ...]] = {}
        for chunk in chunks(ids):
            clause, values = in_clause("m.id", chunk)
            rows = await self._database.fetch_all(
                "SELECT m.id AS id, "
                "(SELECT p.id FROM messages p WHERE p.channel_id = m.channel_id AND p.id < m.id "
                "AND p.deleted = FALSE AND p.withheld = FALSE ORDER BY p.id DESC LIMIT 1) AS prev, "
                "(SELECT n.id FROM messages n WHERE n.channel_id = m.channel_id AND n.id > m.id "
                "AND n.deleted = FALSE AND n.withheld = FALSE ORDER BY n.id LIMIT 1) AS next "
                f"FROM messages m WHERE {clause}",
                values,
            )
            for row in rows:
                own = int(row["id"])
                found[own] = tuple(
                    int(other)
                    for other in (row["prev"], row["next"])
                    if other is not None
                    and abs(snowflake_time(int(other)) - snowflake_time(own)) <= CONTEXT_GAP
                )
        return found


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
    postgres = _is_postgres(database)
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


def _is_postgres(database: Database) -> bool:
    return not str(database.url.dialect).startswith("sqlite")


_SQLITE_INSERT: Final = (
    "INSERT INTO message_text (rowid, channel_id, scope, author, body, alt, date, ctx) "
    "VALUES (:id, :channel_id, 'c' || :channel_id, :author, :body, :alt, :date, :ctx)"
)


def _match(channel_ids: Sequence[str], words: Sequence[str]) -> str:
    """The FTS5 query: any of the words, in one of the channels; every token quoted.

    Past a few channels the scope tokens cover much of the table and cost more than they
    save; the SQL filter on `channel_id` then narrows alone (it always applies).
    """
    wanted = " OR ".join(f'"{_quote(w)}"' for w in words)
    if len(channel_ids) > _SCOPED_CHANNELS:
        return wanted
    scopes = " OR ".join(f'"c{_quote(c)}"' for c in channel_ids)
    return f"scope : ({scopes}) AND ({wanted})"


def _quote(text: str) -> str:
    return text.replace('"', '""')


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
