"""Retrieval: the messages that answer a query, only in the channels a member may read.

Hybrid search (see `app.retrieval.fusion` for the measurements behind it): the
question's words go to the lexical index (BM25 in the database, filtered by
channel in SQL), its meaning to the vector index (MiniLM in Chroma, filtered by
channel before anything is returned), both at once; the top 50 of each are
scored on both, smoothed with their neighbours and fused. A member named in the
question and a period it names ("last week", "in May 2023") boost what they
point at; `/search`'s author, channel, after and before options filter instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from app.discord.snowflakes import time_snowflake
from app.retrieval.fusion import Candidate, Evidence, fuse
from app.retrieval.index import Hit, MessageIndex
from app.retrieval.query import named, period_in, terms, without_names
from app.store.db import Store
from app.store.models import StoredMessage

if TYPE_CHECKING:
    from app.retrieval.embedder import Vectors

# Candidates taken from each source before fusion (measured: 50 gives the recall of scoring
# every message within 0.01, at half the reads of 100).
CANDIDATES = 50
# With a filter, more dense candidates are read, since the filter drops some.
FILTERED_CANDIDATES = 300
# A channel's authors are re-read at most this often.
_AUTHORS_TTL = 60.0


@dataclass(frozen=True, slots=True)
class Filters:
    """What `/search`'s options narrow the search to; empty means no narrowing."""

    author_ids: frozenset[str] = frozenset()
    after: datetime | None = None
    before: datetime | None = None

    def __bool__(self) -> bool:
        return bool(self.author_ids) or self.after is not None or self.before is not None

    def admits(self, author_id: str, sent: datetime) -> bool:
        """Whether a message by this author, sent then, passes every filter."""
        if self.author_ids and author_id not in self.author_ids:
            return False
        if self.after is not None and sent < self.after:
            return False
        return self.before is None or sent < self.before


@dataclass(frozen=True, slots=True)
class Result:
    """One message found, with its fused score (comparable within one search)."""

    message: StoredMessage
    score: float


@dataclass(frozen=True, slots=True)
class Passage:
    """One hit and the messages around it, in time order."""

    hit: StoredMessage
    score: float
    messages: tuple[StoredMessage, ...]


@dataclass(slots=True)
class _Authors:
    names: dict[str, str] = field(default_factory=dict)
    read_at: float = 0.0


class Retriever:
    """Finds what the store holds about a query, only in the channels it is given."""

    def __init__(
        self,
        store: Store,
        index: MessageIndex,
        *,
        before: int = 1,
        after: int = 1,
        on_search: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._index = index
        # Told the seconds each search took (the worker's metrics).
        self._on_search = on_search
        self._before = before
        self._after = after
        self._clock = clock
        self._authors: dict[frozenset[str], _Authors] = {}

    async def search(
        self,
        query: str,
        channel_ids: Collection[str],
        k: int,
        *,
        filters: Filters | None = None,
        now: datetime | None = None,
    ) -> list[Result]:
        """The k best live messages for `query` in the channels, best first."""
        if not channel_ids or k <= 0 or not query.strip():
            return []
        started = time.perf_counter()
        filters = filters or Filters()
        channels = sorted(channel_ids)
        mentioned = await self.members_named(query, channels)
        # One member named: their messages are boosted. Two or more: no boost.
        names = {name.lower() for name in mentioned.values()}
        boosted = frozenset(mentioned) if len(names) == 1 else frozenset()
        period = period_in(query, now or datetime.now(UTC))
        wanted = FILTERED_CANDIDATES if filters else CANDIDATES

        async def by_meaning() -> tuple[Vectors, list[Hit]]:
            text = without_names(query, sorted(set(mentioned.values())))
            vector = await asyncio.to_thread(self._index.encode, text)
            return vector, await self._index.aquery(vector, channel_ids=channels, k=wanted)

        # The words are searched while the question is embedded.
        (vector, dense_hits), lexical = await asyncio.gather(
            by_meaning(),
            self._store.lexical_search(
                channels,
                terms(query),
                CANDIDATES,
                author_ids=sorted(filters.author_ids),
                after_id=_bound(filters.after),
                before_id=_bound(filters.before),
            ),
        )
        ids = list(dict.fromkeys([h.id for h in dense_hits] + [i for i, _ in lexical]))
        # Only what fusion needs of each; the few messages returned are read whole at the end.
        facts = await self._store.search_facts(ids)
        # A vector not yet deleted after its author opted out is never a hit (no facts).
        live = [
            facts[i]
            for i in ids
            if i in facts
            and facts[i].channel_id in channel_ids
            and filters.admits(facts[i].author_id, facts[i].timestamp)
        ]
        scored = {m.id for m in live} | {n for m in live for n in m.neighbours}
        # The dense side already scored its own hits; only the others need their vectors.
        dense = {h.id: h.similarity for h in dense_hits}
        missing = sorted(scored - dense.keys())
        dense.update(await asyncio.to_thread(self._index.similarities, vector, missing))
        candidates = [
            Candidate(
                id=m.id,
                author_id=m.author_id,
                in_period=period is not None and period.contains(m.timestamp),
                neighbours=m.neighbours,
            )
            for m in live
        ]
        fused = fuse(candidates, Evidence(dict(lexical), dense), author_ids=boosted, k=k)
        messages = {m.id: m for m in await self._store.get_messages([f.id for f in fused])}
        if self._on_search is not None:
            self._on_search(time.perf_counter() - started)
        return [
            Result(messages[f.id], f.score)
            for f in fused
            if f.id in messages and not messages[f.id].withheld
        ]

    async def passages(self, query: str, channel_ids: Collection[str], k: int) -> list[Passage]:
        """The best hits, each widened with its neighbours; no message appears twice.

        Every hit gets its passage, best first: a hit already shown beside an earlier one
        gets an empty one, so the hits still rank as sources.
        """
        seen: set[int] = set()
        passages: list[Passage] = []
        for result in await self.search(query, channel_ids, k):
            hit = result.message
            if hit.id in seen:
                passages.append(Passage(hit=hit, score=result.score, messages=()))
                continue
            around = await self._store.neighbours(
                hit.channel_id, hit.id, before=self._before, after=self._after
            )
            messages = [m for m in around if m.id not in seen and m.channel_id in channel_ids]
            if hit.id not in {m.id for m in messages}:
                messages.append(hit)
            messages.sort(key=lambda m: m.id)
            seen.update(m.id for m in messages)
            passages.append(Passage(hit=hit, score=result.score, messages=tuple(messages)))
        return passages

    async def members_named(self, query: str, channel_ids: Collection[str]) -> dict[str, str]:
        """The authors of these channels whose display name the query mentions: id -> name."""
        authors = await self._channel_authors(frozenset(channel_ids))
        found = set(named(query, sorted(set(authors.values()), key=len, reverse=True)))
        return {author: name for author, name in authors.items() if name in found}

    async def _channel_authors(self, channels: frozenset[str]) -> dict[str, str]:
        """Author id to display name in these channels, re-read at most once a minute."""
        cached = self._authors.get(channels)
        now = self._clock()
        if cached is None or now - cached.read_at > _AUTHORS_TTL:
            cached = _Authors(await self._store.channel_authors(sorted(channels)), now)
            if len(self._authors) > 256:
                self._authors.clear()
            self._authors[channels] = cached
        return cached.names


def _bound(when: datetime | None) -> int | None:
    """A time as a message id bound, clamped to what the database's 64-bit ids can hold."""
    if when is None:
        return None
    return max(0, min(time_snowflake(when.timestamp()), 2**63 - 1))


def jump_link(message: StoredMessage) -> str:
    """The URL that opens a message in Discord."""
    guild = message.guild_id or "@me"
    return f"https://discord.com/channels/{guild}/{message.channel_id}/{message.id}"
