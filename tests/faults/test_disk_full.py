"""The disk filling up during a sync: a clear one-line error, no damage, and the next run
(once there is room) completes with no gap and no duplicate.

A real full disk needs a small file system, which unprivileged tests cannot mount. The
database's own limit stands in for it: `PRAGMA max_page_count` on every connection the
store opens makes SQLite refuse to grow with SQLITE_FULL, the error a full disk gives.
For the index, the real Chroma index sits behind the indexer's `IndexWriter` seam with a
fixed amount of room, failing as Chroma does once its disk is full.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from databases import Database

from app.discord.rest import DiscordRest
from app.errors import BotError
from app.retrieval.embedder import Embedder, Vectors, default_model_dir
from app.retrieval.index import (
    COLLECTION,
    IndexItem,
    MessageIndex,
    VectorIndexError,
    open_chroma,
)
from app.store.db import SQLiteConnection, Store
from app.store.errors import StoreFullError
from app.store.models import IndexState
from app.sync.indexer import Indexer
from app.sync.runner import SyncRunner
from tests.fake_discord import DEFAULT_TOKEN, FakeDiscord

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

pytestmark = pytest.mark.faults

CHROMA_FULL = (
    "could not upsert into the index: Database error: error returned from database: "
    "(code: 13) database or disk is full"
)


def capped(pages: int) -> type[SQLiteConnection]:
    """The store's connection class, on a database that may not grow past `pages` pages."""

    class CappedConnection(SQLiteConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.execute(f"PRAGMA max_page_count = {pages}")

    return CappedConnection


@dataclass
class FillingIndex:
    """The real index on a volume with room for `room` more vectors."""

    index: MessageIndex
    room: int

    def embed(self, items: Sequence[IndexItem]) -> Vectors:
        return self.index.embed(items)

    def store(self, items: Sequence[IndexItem], vectors: Vectors) -> None:
        if len(items) > self.room:
            raise VectorIndexError(CHROMA_FULL)
        self.index.store(items, vectors)
        self.room -= len(items)

    def delete(self, ids: Sequence[int]) -> None:
        self.index.delete(ids)


@dataclass
class Server:
    fake: FakeDiscord
    guild_id: str
    channels: list[str]
    url: str
    index: MessageIndex
    chroma: ClientAPI

    def discord_ids(self) -> set[int]:
        return {int(m["id"]) for c in self.channels for m in self.fake.messages[c]}

    async def sync(self, store: Store, index: Any) -> Any:
        async with DiscordRest(self.fake.api_base, DEFAULT_TOKEN) as rest:
            runner = SyncRunner(rest, store, Indexer(store, index), recheck_seconds=0)
            return await runner.sync_guilds([self.guild_id])

    async def stored_ids(self) -> list[int]:
        async with Store.from_url(self.url) as store:
            rows = await store.database.fetch_all("SELECT id FROM messages ORDER BY id")
        return [int(row["id"]) for row in rows]

    async def integrity(self) -> list[str]:
        async with Store.from_url(self.url) as store:
            rows = await store.database.fetch_all("PRAGMA integrity_check")
        return [str(row[0]) for row in rows]

    def index_ids(self) -> list[int]:
        got = self.chroma.get_collection(COLLECTION).get(include=[])
        return [int(i) for i in got["ids"]]


@pytest.fixture
async def server(
    fake_discord: FakeDiscord, tmp_path: Path, model_cache_dir: Path
) -> AsyncIterator[Server]:
    """A guild of two channels, an empty migrated database and a real, empty index."""
    guild = fake_discord.add_guild()
    general = fake_discord.add_channel(guild["id"], "general")
    random = fake_discord.add_channel(guild["id"], "random")
    fake_discord.add_messages(general["id"], 600, text=lambda i: f"status update {i} " * 4)
    fake_discord.add_messages(random["id"], 200, text=lambda i: f"off-topic remark {i}")
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    async with Store.from_url(url) as store:
        await store.migrate()
    embedder = Embedder(default_model_dir(), cache_dir=model_cache_dir)
    embedder.load()
    client = open_chroma(tmp_path / "chroma", None)
    try:
        index = MessageIndex(client, embedder)
        yield Server(fake_discord, guild["id"], [general["id"], random["id"]], url, index, client)
    finally:
        client.close()  # type: ignore[attr-defined]


async def page_count(url: str) -> int:
    async with Store.from_url(url) as store:
        return int(await store.database.fetch_val("PRAGMA page_count"))


async def test_a_full_database_stops_the_sync_and_the_next_run_completes(
    server: Server,
) -> None:
    # Room for two of the eight pages of history (a page takes some 15 database pages).
    room = await page_count(server.url) + 40
    async with Store(Database(server.url, factory=capped(room))) as store:
        with pytest.raises(StoreFullError) as stopped:
            await server.sync(store, server.index)
    message = str(stopped.value)
    assert isinstance(stopped.value, BotError)
    assert "\n" not in message and "full" in message and "resumes" in message
    assert isinstance(stopped.value.__cause__, sqlite3.OperationalError)
    assert await server.integrity() == ["ok"]
    partial = await server.stored_ids()
    assert 0 < len(partial) < len(server.discord_ids())
    # What was stored was indexed before the run gave up.
    assert set(server.index_ids()) == set(partial)

    # Room again: the next run picks up from the stored cursors.
    async with Store.from_url(server.url) as store:
        summary = await server.sync(store, server.index)
        assert await store.count_live(index_state=IndexState.PENDING) == 0
    assert summary.new == len(server.discord_ids()) - len(partial)
    stored = await server.stored_ids()
    assert stored == sorted(server.discord_ids())
    vectors = server.index_ids()
    assert len(vectors) == len(set(vectors)) and set(vectors) == server.discord_ids()
    assert await server.integrity() == ["ok"]


async def test_a_full_index_disk_leaves_rows_pending_for_the_next_run(server: Server) -> None:
    full = FillingIndex(server.index, room=300)
    async with Store.from_url(server.url) as store:
        with pytest.raises(VectorIndexError) as stopped:
            await server.sync(store, full)
        assert await store.count_live(index_state=IndexState.INDEXED) == 300
    assert "\n" not in str(stopped.value) and "full" in str(stopped.value)
    # History was stored whole; only the vectors wait, in the outbox.
    assert await server.stored_ids() == sorted(server.discord_ids())
    assert len(server.index_ids()) == 300

    async with Store.from_url(server.url) as store:
        summary = await server.sync(store, server.index)
        assert await store.count_live(index_state=IndexState.PENDING) == 0
        assert await store.count_live(index_state=IndexState.INDEXED) == 800
    assert summary.new == 0 and summary.embedded == 500
    vectors = server.index_ids()
    assert len(vectors) == len(set(vectors)) and set(vectors) == server.discord_ids()
    assert await server.stored_ids() == sorted(server.discord_ids())
