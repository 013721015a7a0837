"""The Chroma vector index of synced messages, and permission-filtered search.

One collection, ``messages``, with cosine distance over HNSW. Vectors are
always computed by our ``Embedder`` and handed to Chroma: the collection is
created and opened with ``embedding_function=None`` so Chroma's default
embedding function (which downloads a model at run time) is never bound to it.
The Chroma id is ``str(message id)``; the metadata holds channel_id, guild_id,
author_id and timestamp (unix seconds).

Why search does not simply pass ``where``
-----------------------------------------
A metadata filter makes Chroma resolve the matching ids in SQLite and then run a
filtered HNSW search, and its cost grows with the number of matching rows.
Measured at 100k vectors (50 channels of 2% each, k=8, this 2-core machine
while shared, ``python -m bench.embedding``)::

    unfiltered, n=8                         p95   2.8 ms
    unfiltered, n=100, with metadatas       p95   6.5-9.6 ms
    where channel_id == one channel (2%)    p95  74-104 ms  (32 ms on an idle machine)
    where $in 5 channels (10%)              p95  56 ms
    where $in 40 channels (80%)             p95 226 ms

So ``query`` first over-fetches ``max(100, 2*k)`` nearest neighbours without a
filter and keeps those in permitted channels. When the permitted channels hold
most of the index (server scope) that yields k hits, at unfiltered cost. When
fewer survive, the permitted channels are a smaller part of the index, and their
own vectors are few: ``app.retrieval.scan`` copies them out once (dropped on any
write to the channel) and scans them exactly. Channels too large to copy get a
wider over-fetch (``12*k``), and Chroma's ``where`` only if that falls short too.
No hit from a non-permitted channel can be returned. Measured with
``python -m bench.embedding`` at 100k vectors, k=50 (what hybrid search asks),
p95: 1 channel 6 ms, 5 channels 7 ms, 40 channels 5 ms (a 12*k first look: 25 ms).

Thread-safety: every method is blocking. The Chroma client may be used from
several threads; writes (upsert, delete, reset) are serialised by a lock here so
that a reset never interleaves with a batch. The ``a*`` methods run the blocking
calls in a worker thread with ``asyncio.to_thread`` for use from the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from app.errors import BotError
from app.retrieval.scan import ChannelMatrix, ChannelVectors, FutileOverfetch

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

    from app.retrieval.embedder import Embedder, Vectors

logger = logging.getLogger(__name__)

COLLECTION = "messages"
# The file an embedded Chroma directory keeps its collections and metadata in.
CHROMA_FILE = "chroma.sqlite3"
BATCH_SIZE = 100
FIRST_LOOK = 2
OVERFETCH_FACTOR = 12
OVERFETCH_MIN = 100
# Tries of one call to Chroma while its collection is rebuilt or written elsewhere.
_ATTEMPTS = 4


class VectorIndexError(BotError):
    """The vector index could not be reached or refused an operation."""


@dataclass(frozen=True)
class IndexItem:
    """One message as the index stores it."""

    id: int
    text: str
    channel_id: str
    guild_id: str
    author_id: str
    timestamp: int


@dataclass(frozen=True)
class Hit:
    """A search result: the message id, its cosine similarity and its channel."""

    id: int
    similarity: float
    channel_id: str


def open_chroma(path: Path | None, url: str | None) -> ClientAPI:
    """A Chroma client: an HttpClient when url is set, else a PersistentClient at path."""
    import chromadb
    from chromadb.config import Settings
    from chromadb.errors import ChromaError

    settings = Settings(anonymized_telemetry=False)
    if url:
        parts = urlsplit(url)
        ssl = parts.scheme == "https"
        try:
            return chromadb.HttpClient(
                host=parts.hostname or "localhost",
                port=parts.port or (443 if ssl else 80),
                ssl=ssl,
                settings=settings,
            )
        except (
            ValueError,
            ChromaError,
        ) as exc:  # chromadb reports a refused connection as ValueError
            raise VectorIndexError(f"CHROMA_URL: cannot use {url}: {exc}") from exc
    if path is None:
        raise VectorIndexError("neither a Chroma path nor a Chroma URL was given")
    path.mkdir(parents=True, exist_ok=True)
    try:
        with _translated("open the Chroma directory"):
            return chromadb.PersistentClient(path=str(path), settings=settings)
    except VectorIndexError:
        _forget_system(str(path))
        raise


def close_chroma(client: ClientAPI) -> None:
    """Close a client of `open_chroma` (`Client.close`, undeclared by ClientAPI), and the
    connection pools of an HTTP client and its admin client, which chromadb 1.5 leaves open."""
    sessions = [
        getattr(getattr(owner, "_server", None), "_session", None)
        for owner in (client, getattr(client, "_admin_client", None))
    ]
    close = getattr(client, "close", None)
    if callable(close):
        close()
    for session in sessions:
        if isinstance(session, httpx.Client):
            session.close()


def _forget_system(identifier: str) -> None:
    """Drop the System chromadb cached for a path whose start failed.

    chromadb keeps one System per path for the whole process, cached before it starts; a
    damaged directory would leave a broken one there for every later client of that path.
    """
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient._identifier_to_system.pop(identifier, None)


class MessageIndex:
    """Upserts, deletes and searches message vectors in the ``messages`` collection."""

    def __init__(self, client: ClientAPI, embedder: Embedder) -> None:
        self._client = client
        self._embedder = embedder
        self._write_lock = threading.Lock()
        self._skips = FutileOverfetch()
        self._vectors = ChannelVectors(self._load_channels)
        self._collection = self._open_collection()

    def upsert(self, items: Sequence[IndexItem]) -> None:
        """Embed and store items (replacing any with the same id), 100 per batch."""
        self.store(items, self.embed(items))

    def embed(self, items: Sequence[IndexItem]) -> Vectors:
        """The items' vectors, row for row; the index is not touched."""
        # Chat repeats itself ("ok", "thanks", "+1"): each distinct text is encoded once.
        distinct = list(dict.fromkeys(item.text for item in items))
        encoded = self._embedder.encode(distinct)
        row = {text: i for i, text in enumerate(distinct)}
        vectors: Vectors = encoded[[row[item.text] for item in items]]
        return vectors

    def store(self, items: Sequence[IndexItem], vectors: Vectors) -> None:
        """Store items with vectors from ``embed`` (replacing any with the same id)."""
        if len(vectors) != len(items):
            raise ValueError(f"{len(vectors)} vectors for {len(items)} items")
        for start in range(0, len(items), BATCH_SIZE):
            batch = items[start : start + BATCH_SIZE]
            metadatas: list[Any] = [
                {
                    "channel_id": item.channel_id,
                    "guild_id": item.guild_id,
                    "author_id": item.author_id,
                    "timestamp": item.timestamp,
                }
                for item in batch
            ]
            with self._write_lock:
                self._use(
                    "upsert into the index",
                    "upsert",
                    ids=[str(item.id) for item in batch],
                    embeddings=vectors[start : start + BATCH_SIZE],
                    metadatas=metadatas,
                )
                self._vectors.invalidate({item.channel_id for item in batch})

    def delete(self, ids: Sequence[int]) -> None:
        """Remove the given message ids; unknown ids are ignored."""
        for start in range(0, len(ids), BATCH_SIZE):
            batch = [str(i) for i in ids[start : start + BATCH_SIZE]]
            with self._write_lock:
                self._use("delete from the index", "delete", ids=batch)
                # The deleted ids' channels are not known here: drop every copy.
                self._vectors.invalidate()

    def count(self) -> int:
        """Number of vectors in the index."""
        return int(self._use("count the index", "count"))

    def reset(self) -> None:
        """Drop and recreate the collection, for a full rebuild."""
        from chromadb.errors import NotFoundError

        with self._write_lock, _translated("reset the index"):
            try:
                self._client.delete_collection(COLLECTION)
            except NotFoundError:
                logger.info("no %s collection to drop", COLLECTION)
            self._collection = self._open_collection()
            self._vectors.invalidate()
        logger.info("vector index reset")

    def query(
        self, text_or_vector: str | Vectors, *, channel_ids: Sequence[str] | None, k: int
    ) -> list[Hit]:
        """The k most similar messages, restricted to channel_ids unless it is None."""
        if k <= 0 or (channel_ids is not None and not channel_ids):
            return []
        vector = self._vector(text_or_vector)
        if channel_ids is None:
            return self._search(vector, k, where=None)
        permitted = frozenset(channel_ids)
        if self._skips.take(permitted):
            return self._filtered(vector, permitted, k)
        hits, enough = self._overfetch(vector, permitted, k, FIRST_LOOK)
        if enough:
            return hits
        logger.debug("over-fetch kept %d; searching the channels alone", len(hits))
        if 2 * len(hits) < k:  # the permitted channels are a sliver of the index
            self._skips.remember(permitted)
        return self._filtered(vector, permitted, k)

    def encode(self, text: str) -> Vectors:
        """The query vector of `text` (blocking)."""
        return self._vector(text)

    def similarities(self, vector: Vectors, ids: Sequence[int]) -> dict[int, float]:
        """Cosine similarity of `vector` to each of these messages that has a vector."""
        if not ids:
            return {}
        scores: dict[int, float] = {}
        for start in range(0, len(ids), 1000):
            batch = [str(i) for i in ids[start : start + 1000]]
            got = self._use("read vectors", "get", ids=batch, include=["embeddings"])
            embeddings = got["embeddings"]
            if embeddings is None or not len(got["ids"]):
                continue
            matrix = np.asarray(embeddings, dtype=np.float32).reshape(len(got["ids"]), -1)
            # The embedder's vectors are normalised: the dot product is the cosine.
            for message_id, score in zip(got["ids"], matrix @ vector, strict=True):
                scores[int(message_id)] = float(score)
        return scores

    def _overfetch(
        self, vector: Vectors, permitted: frozenset[str], k: int, factor: int
    ) -> tuple[list[Hit], bool]:
        """The permitted among the nearest `max(100, factor*k)`; and whether they answer."""
        wanted = max(OVERFETCH_MIN, factor * k)
        candidates = self._search(vector, wanted, where=None)
        hits = [hit for hit in candidates if hit.channel_id in permitted]
        return hits[:k], len(hits) >= k or len(candidates) < wanted

    def _filtered(self, vector: Vectors, permitted: frozenset[str], k: int) -> list[Hit]:
        """Exact search over the permitted channels' own vectors; if too many, a wide
        over-fetch, then Chroma's filter."""
        scanned = self._vectors.search(vector, permitted, k)
        if scanned is not None:
            return [Hit(id=i, similarity=s, channel_id=c) for i, s, c in scanned]
        hits, enough = self._overfetch(vector, permitted, k, OVERFETCH_FACTOR)
        if enough:
            return hits
        return self._search(vector, k, where=_channel_filter(permitted))

    def _load_channels(self, channels: list[str], limit: int) -> dict[str, ChannelMatrix] | None:
        """The vectors of some channels, or None when they hold more than `limit`."""
        got = self._use(
            "read channel vectors",
            "get",
            where=_channel_filter(frozenset(channels)),
            include=["embeddings", "metadatas"],
            limit=limit + 1,
        )
        ids = got["ids"]
        if len(ids) > limit:
            return None
        embeddings = got["embeddings"] if got["embeddings"] is not None else []
        metadatas = got["metadatas"] or []
        rows: dict[str, tuple[list[int], list[Any]]] = {c: ([], []) for c in channels}
        for message_id, vector, metadata in zip(ids, embeddings, metadatas, strict=True):
            channel_rows = rows[str(metadata["channel_id"])]
            channel_rows[0].append(int(message_id))
            channel_rows[1].append(vector)
        dims = self._embedder.dimensions
        return {
            channel: ChannelMatrix(
                ids=np.asarray(found_ids, dtype=np.int64),
                vectors=np.asarray(vectors, dtype=np.float32).reshape(len(found_ids), dims),
            )
            for channel, (found_ids, vectors) in rows.items()
        }

    async def aupsert(self, items: Sequence[IndexItem]) -> None:
        """``upsert`` off the event loop."""
        await asyncio.to_thread(self.upsert, items)

    async def adelete(self, ids: Sequence[int]) -> None:
        """``delete`` off the event loop."""
        await asyncio.to_thread(self.delete, ids)

    async def acount(self) -> int:
        """``count`` off the event loop."""
        return await asyncio.to_thread(self.count)

    async def areset(self) -> None:
        """``reset`` off the event loop."""
        await asyncio.to_thread(self.reset)

    async def aquery(
        self, text_or_vector: str | Vectors, *, channel_ids: Sequence[str] | None, k: int
    ) -> list[Hit]:
        """``query`` off the event loop."""
        return await asyncio.to_thread(
            lambda: self.query(text_or_vector, channel_ids=channel_ids, k=k)
        )

    def _vector(self, text_or_vector: str | Vectors) -> Vectors:
        if isinstance(text_or_vector, str):
            encoded: Vectors = self._embedder.encode([text_or_vector])[0]
            return encoded
        vector = np.asarray(text_or_vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self._embedder.dimensions:
            raise VectorIndexError(
                f"query vector has {vector.shape[0]} dimensions, "
                f"expected {self._embedder.dimensions}"
            )
        return vector

    def _search(self, vector: Vectors, n: int, *, where: dict[str, Any] | None) -> list[Hit]:
        result = self._use(
            "query the index",
            "query",
            query_embeddings=vector[None, :],
            n_results=n,
            where=where,
            include=["metadatas", "distances"],
        )
        ids = result["ids"][0]
        distances = (result["distances"] or [[]])[0]
        metadatas = (result["metadatas"] or [[]])[0]
        return [
            Hit(id=int(i), similarity=1.0 - float(d), channel_id=str(m["channel_id"]))
            for i, d, m in zip(ids, distances, metadatas, strict=True)
        ]

    def _use(self, action: str, method: str, **kwargs: Any) -> Any:
        """Call the collection's `method`. When another process rebuilt the collection (a
        reindex drops and recreates it by name), reopen it by name and call again, so answers
        go on through a reindex. A Chroma server reading a collection that is being written
        may briefly answer that its HNSW segment is not on disk yet: asked again shortly."""
        from chromadb.errors import InternalError, NotFoundError

        with _translated(action):
            for attempt in range(_ATTEMPTS):
                collection = self._collection
                try:
                    return getattr(collection, method)(**kwargs)
                except NotFoundError:
                    if self._collection is collection:
                        logger.info("the %s collection was rebuilt; reopening it", COLLECTION)
                        self._collection = self._open_collection()
                        self._vectors.invalidate()
                except InternalError as exc:
                    if attempt == _ATTEMPTS - 1 or "Nothing found on disk" not in str(exc):
                        raise
                    time.sleep(0.2 * (attempt + 1))
            return getattr(self._collection, method)(**kwargs)

    def _open_collection(self) -> Collection:
        with _translated("open the messages collection"):
            return self._client.get_or_create_collection(
                COLLECTION,
                configuration={"hnsw": {"space": "cosine"}},
                # Never let Chroma bind (and later download) its default embedding function.
                embedding_function=None,
            )


def _channel_filter(channels: frozenset[str]) -> dict[str, Any]:
    if len(channels) == 1:
        (channel,) = channels
        return {"channel_id": channel}
    return {"channel_id": {"$in": sorted(channels)}}


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn Chroma and transport errors into VectorIndexError at this boundary."""
    import httpx
    from chromadb.errors import ChromaError

    try:
        yield
    except (ChromaError, httpx.HTTPError, ConnectionError) as exc:
        raise VectorIndexError(f"could not {action}: {exc}") from exc
