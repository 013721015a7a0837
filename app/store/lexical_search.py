"""Searching the lexical index (see `app.store.lexical`): BM25 over the permitted channels.

A search is an OR of the question's words, ranked by BM25 and cut to the best few.
Its cost is the number of rows it ranks, so two rules keep that small on a large
server (measured at 100,000 messages, bench/embedding.py):

- **Common words.** A word held by more than a tenth of all rows (and by over
  2,000) says little about which message answers, since BM25 weighs it near
  nothing, yet ranking every row that holds it is most of a search's cost. Such
  words are left out when the question has rarer ones; when every word is common,
  a row must hold the first three (Elasticsearch's `cutoff_frequency` rule). How
  many rows hold a word is counted up to that limit and remembered for ten minutes.
- **Channels in the index.** Every FTS5 row carries its channel as a `scope`
  token, so the index itself narrows to the permitted channels before ranking:
  it names them when they are few, or the channels left out when those are few.
  The SQL filter on `channel_id` applies to every result in any case: after the
  ranking when the index already narrowed, and before it when it did not.

Part of `Store` (see `app.store.db`), with the reads that fusion needs around a search.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from databases import Database

from app.discord.snowflakes import snowflake_time
from app.store.lexical import CONTEXT_GAP, is_postgres
from app.store.models import parse_time
from app.store.rows import chunks, in_clause

# BM25 weights of the FTS5 columns (channel_id, scope, author, body, alt, date, ctx). The
# first is not indexed; `scope` holds one token per row, "c" + the channel id.
WEIGHTS: Final = (0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.35)
# Up to this many channels, the FTS5 query names them...
_SCOPED_CHANNELS: Final = 8
# ...and up to this many channels left out, it names those (a NOT costs less than an OR).
_EXCLUDED_CHANNELS: Final = 16
# A word in more rows than this share of all, and than the floor, is common.
COMMON_SHARE: Final = 0.1
COMMON_FLOOR: Final = 2000
# When every word is common, a row must hold this many of them, the first in the question.
COMMON_KEPT: Final = 3
_COUNTS_TTL: Final = 600.0
_COUNTS_KEPT: Final = 50_000
# A channel new since the list was read only costs results: the SQL filter drops its rows.
_CHANNELS_TTL: Final = 30.0
_PG_WORD: Final = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class _Count:
    rows: int
    capped: bool
    at: float


class IndexStats:
    """What searches remember of the index: how many rows hold each word (counted up to a
    cap), how many rows there are, and which channels have messages.

    These change slowly (a word common in 100,000 messages stays common), so each is
    reused for `ttl` seconds, the channels for `channels_ttl`; a capped count only
    answers "more than the cap".
    """

    def __init__(
        self,
        ttl: float = _COUNTS_TTL,
        capacity: int = _COUNTS_KEPT,
        clock: Callable[[], float] = time.monotonic,
        channels_ttl: float = _CHANNELS_TTL,
    ) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._clock = clock
        self._channels_ttl = channels_ttl
        self._counts: dict[str, _Count] = {}
        self._total: _Count | None = None
        self._channels: tuple[float, frozenset[str]] | None = None

    def more_than(self, word: str, limit: int) -> bool | None:
        """Whether more than `limit` rows hold the word; None when no count can tell."""
        count = self._counts.get(word)
        if count is None or self._clock() - count.at > self._ttl:
            return None
        if count.rows > limit:
            return True
        return None if count.capped else False

    def remember(self, word: str, rows: int, cap: int) -> None:
        """Record a count taken with `LIMIT cap` (so `rows == cap` means at least that)."""
        if len(self._counts) >= self._capacity:
            self._counts.clear()
        self._counts[word] = _Count(rows, rows >= cap, self._clock())

    def total(self) -> int | None:
        """The rows of the whole table, if counted within `ttl`."""
        if self._total is None or self._clock() - self._total.at > self._ttl:
            return None
        return self._total.rows

    def remember_total(self, rows: int) -> None:
        """Record how many rows the table holds."""
        self._total = _Count(rows, False, self._clock())

    def channels(self) -> frozenset[str] | None:
        """The channels with messages, if listed within `channels_ttl`."""
        if self._channels is None or self._clock() - self._channels[0] > self._channels_ttl:
            return None
        return self._channels[1]

    def remember_channels(self, channels: frozenset[str]) -> None:
        """Record which channels have messages."""
        self._channels = (self._clock(), channels)


class LexicalQueries:
    """The lexical index's search, and the reads that fusion needs around it."""

    _database: Database
    _index_stats: IndexStats

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

        Any of the words matches (each is quoted: no word is read as query syntax), except
        that common words are dropped (see the module). Scores are positive, higher is
        better, and comparable within one search only. `after_id` and `before_id` bound the
        ids (snowflakes, so times); `author_ids` narrows to authors.
        """
        if not channel_ids or not words or limit <= 0:
            return []
        words, every = await self._telling_words(words)
        postgres = is_postgres(self._database)
        key = "t.id" if postgres else "t.rowid"
        where: list[str] = []
        values: dict[str, object] = {}
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
        channels, channel_values = in_clause("t.channel_id", channel_ids)
        values.update(channel_values)
        if postgres:
            terms = [t for w in words for t in _PG_WORD.findall(w.lower())]
            if not terms:
                return []
            rows = await self._database.fetch_all(
                # Weights of D, C, B, A: context is D, the message itself A.
                "SELECT t.id AS id, ts_rank('{0.35, 0.35, 0.35, 1.0}', t.document, q, 1) "
                "AS score "
                "FROM message_text t, to_tsquery('english', :query) q "
                f"WHERE t.document @@ q AND {' AND '.join([channels, *where])} "
                "ORDER BY score DESC LIMIT :limit",
                {
                    **values,
                    "query": (" & " if every else " | ").join(dict.fromkeys(terms)),
                    "limit": limit,
                },
            )
            return [(int(r["id"]), float(r["score"])) for r in rows]
        scope = await self._scope(channel_ids)
        weights = ", ".join(str(w) for w in WEIGHTS)
        if scope is None:
            where.append(channels)  # the index cannot narrow: filter, then rank what is left
        ranked = (
            f"SELECT t.rowid AS id, t.channel_id AS channel_id, -bm25(message_text, {weights}) "
            "AS score FROM message_text t WHERE message_text MATCH :match "
            f"{''.join(' AND ' + w for w in where)} "
            f"ORDER BY bm25(message_text, {weights}) LIMIT :limit"
        )
        rows = await self._database.fetch_all(
            f"SELECT id, score FROM ({ranked}) t WHERE {channels} ORDER BY score DESC",
            {**values, "match": _match(scope, words, every), "limit": limit},
        )
        return [(int(r["id"]), float(r["score"])) for r in rows]

    async def _telling_words(self, words: Sequence[str]) -> tuple[list[str], bool]:
        """The words worth searching for, and whether a row must hold every one of them."""
        total = self._index_stats.total()
        if total is None:
            total = int(await self._database.fetch_val("SELECT count(*) FROM messages") or 0)
            self._index_stats.remember_total(total)
        cutoff = max(COMMON_FLOOR, int(total * COMMON_SHARE))
        if total <= cutoff:
            return list(words), False  # no word can be in more rows than there are
        common = [await self._common(word, cutoff) for word in words]
        rare = [w for w, is_common in zip(words, common, strict=True) if not is_common]
        if rare:
            return rare, False
        return list(words[:COMMON_KEPT]), True

    async def _common(self, word: str, cutoff: int) -> bool:
        known = self._index_stats.more_than(word, cutoff)
        if known is not None:
            return known
        cap = cutoff + 1
        if is_postgres(self._database):
            query = (
                "SELECT count(*) FROM (SELECT 1 FROM message_text "
                "WHERE document @@ plainto_tsquery('english', :word) LIMIT :cap) s"
            )
            quoted = word
        else:
            query = (
                "SELECT count(*) FROM (SELECT 1 FROM message_text "
                "WHERE message_text MATCH :word LIMIT :cap)"
            )
            quoted = f'"{_quote(word)}"'
        rows = int(await self._database.fetch_val(query, {"word": quoted, "cap": cap}) or 0)
        self._index_stats.remember(word, rows, cap)
        return rows > cutoff

    async def _scope(self, channel_ids: Sequence[str]) -> _Scope | None:
        """How the index itself can narrow to the channels; None when it cannot cheaply."""
        if len(channel_ids) <= _SCOPED_CHANNELS:
            return _Scope(named=True, channels=tuple(sorted(channel_ids)))
        known = self._index_stats.channels()
        if known is None:
            # Every channel with messages, one index seek each.
            rows = await self._database.fetch_all(
                "WITH RECURSIVE c(id) AS (SELECT MIN(channel_id) FROM messages UNION ALL "
                "SELECT (SELECT MIN(channel_id) FROM messages WHERE channel_id > c.id) FROM c "
                "WHERE c.id IS NOT NULL) SELECT id FROM c WHERE id IS NOT NULL"
            )
            known = frozenset(str(r["id"]) for r in rows)
            self._index_stats.remember_channels(known)
        others = sorted(known - set(channel_ids))
        if len(others) > _EXCLUDED_CHANNELS:
            return None
        return _Scope(named=False, channels=tuple(others))

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

    async def search_facts(self, ids: Sequence[int]) -> dict[int, SearchFacts]:
        """What fusion needs of each live message among `ids` (withheld ones are left out):
        its channel, author and time, and its live neighbours in the same conversation."""
        found: dict[int, SearchFacts] = {}
        for chunk in chunks(ids):
            clause, values = in_clause("m.id", chunk)
            rows = await self._database.fetch_all(
                "SELECT m.id AS id, m.channel_id AS channel_id, m.author_id AS author_id, "
                "m.timestamp AS timestamp, "
                "(SELECT p.id FROM messages p WHERE p.channel_id = m.channel_id AND p.id < m.id "
                "AND p.deleted = FALSE AND p.withheld = FALSE ORDER BY p.id DESC LIMIT 1) AS prev, "
                "(SELECT n.id FROM messages n WHERE n.channel_id = m.channel_id AND n.id > m.id "
                "AND n.deleted = FALSE AND n.withheld = FALSE ORDER BY n.id LIMIT 1) AS next "
                f"FROM messages m WHERE m.deleted = FALSE AND m.withheld = FALSE AND {clause}",
                values,
            )
            for row in rows:
                own = int(row["id"])
                found[own] = SearchFacts(
                    id=own,
                    channel_id=str(row["channel_id"]),
                    author_id=str(row["author_id"]),
                    timestamp=parse_time(row["timestamp"]),
                    neighbours=tuple(
                        int(other)
                        for other in (row["prev"], row["next"])
                        if other is not None
                        and abs(snowflake_time(int(other)) - snowflake_time(own)) <= CONTEXT_GAP
                    ),
                )
        return found


@dataclass(frozen=True, slots=True)
class SearchFacts:
    """What fusion needs of a message, without reading all of it."""

    id: int
    channel_id: str
    author_id: str
    timestamp: datetime
    # Its live neighbours before and after it, in the same conversation (no silence over
    # `CONTEXT_GAP` between them).
    neighbours: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Scope:
    """The channels an FTS5 query names: the permitted ones, or the ones left out."""

    named: bool
    channels: tuple[str, ...]


def _match(scope: _Scope | None, words: Sequence[str], every: bool) -> str:
    """The FTS5 query: any (or every) of the words, within the scope; every token quoted."""
    wanted = (" AND " if every else " OR ").join(f'"{_quote(w)}"' for w in words)
    if scope is None or not scope.channels:
        return wanted
    scopes = " OR ".join(f'"c{_quote(c)}"' for c in scope.channels)
    if scope.named:
        return f"scope : ({scopes}) AND ({wanted})"
    return f"({wanted}) NOT scope : ({scopes})"


def _quote(text: str) -> str:
    return text.replace('"', '""')
