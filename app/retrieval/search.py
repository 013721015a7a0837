"""Retrieval for answers: ranked hits in the permitted channels, widened into conversations."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from app.retrieval.index import MessageIndex
from app.store.db import Store
from app.store.models import StoredMessage

# Cosine similarity below which a hit is noise for all-MiniLM-L6-v2 on chat text.
SIMILARITY_FLOOR = 0.25


@dataclass(frozen=True, slots=True)
class Passage:
    """One hit and the messages around it, in time order."""

    hit: StoredMessage
    similarity: float
    messages: tuple[StoredMessage, ...]


class Retriever:
    """Finds what the store holds about a query, only in the channels it is given."""

    def __init__(
        self,
        store: Store,
        index: MessageIndex,
        *,
        floor: float = SIMILARITY_FLOOR,
        before: int = 2,
        after: int = 2,
        on_search: Callable[[float], None] | None = None,
    ) -> None:
        self._store = store
        self._index = index
        # Told the seconds each search took (the worker's metrics).
        self._on_search = on_search
        self._floor = floor
        self._before = before
        self._after = after

    async def hits(
        self, query: str, channel_ids: Collection[str], k: int
    ) -> list[tuple[StoredMessage, float]]:
        """The k best live messages above the floor, best first."""
        if not channel_ids or k <= 0:
            return []
        started = time.perf_counter()
        found = await self._index.aquery(query, channel_ids=sorted(channel_ids), k=k)
        kept = [h for h in found if h.similarity >= self._floor and h.channel_id in channel_ids]
        # The index may lag the store by a moment: only live rows count.
        live = {m.id: m for m in await self._store.get_messages([h.id for h in kept])}
        if self._on_search is not None:
            self._on_search(time.perf_counter() - started)
        return [(live[h.id], h.similarity) for h in kept if h.id in live]

    async def passages(self, query: str, channel_ids: Collection[str], k: int) -> list[Passage]:
        """The best hits, each widened with its neighbours; no message appears twice."""
        seen: set[int] = set()
        passages: list[Passage] = []
        for hit, similarity in await self.hits(query, channel_ids, k):
            if hit.id in seen:
                continue
            around = await self._store.neighbours(
                hit.channel_id, hit.id, before=self._before, after=self._after
            )
            messages = [m for m in around if m.id not in seen and m.channel_id in channel_ids]
            if hit.id not in {m.id for m in messages}:
                messages.append(hit)
            messages.sort(key=lambda m: m.id)
            seen.update(m.id for m in messages)
            passages.append(Passage(hit=hit, similarity=similarity, messages=tuple(messages)))
        return passages


def jump_link(message: StoredMessage) -> str:
    """The URL that opens a message in Discord."""
    guild = message.guild_id or "@me"
    return f"https://discord.com/channels/{guild}/{message.channel_id}/{message.id}"
