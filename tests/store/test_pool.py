"""SQLite connections kept between queries, on a real file: reused, and never stale."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from app.store import pool
from app.store.db import Store


async def _count(store: Store) -> int:
    return int(await store.database.fetch_val("SELECT count(*) FROM notes"))


def _file_with(path: Path, rows: int) -> None:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE notes (n INTEGER)")
    connection.executemany("INSERT INTO notes VALUES (?)", [(i,) for i in range(rows)])
    connection.commit()
    connection.close()


async def test_queries_reuse_one_connection(tmp_path: Path) -> None:
    _file_with(tmp_path / "bot.db", 3)
    async with Store.from_url(f"sqlite:///{tmp_path / 'bot.db'}") as store:
        # A temporary table lives only as long as its connection.
        await store.database.execute("CREATE TEMP TABLE here (n INTEGER)")
        for _ in range(5):
            assert await store.database.fetch_val("SELECT count(*) FROM temp.here") == 0
        assert await _count(store) == 3


async def test_a_connection_left_in_a_transaction_is_not_kept(tmp_path: Path) -> None:
    _file_with(tmp_path / "bot.db", 3)
    async with Store.from_url(f"sqlite:///{tmp_path / 'bot.db'}") as store:
        await store.database.execute("CREATE TEMP TABLE here (n INTEGER)")
        await store.database.execute("BEGIN")
        # Released with its transaction open: closed, and the next query gets a fresh one.
        assert await store.database.fetch_val("SELECT count(*) FROM sqlite_temp_master") == 0
        assert await _count(store) == 3


async def test_a_replaced_file_is_read_once_it_is_looked_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A restore puts a new file in place: kept connections to the old one must go.
    monkeypatch.setattr(pool, "FILE_CHECK_EVERY", 0.0)
    _file_with(tmp_path / "bot.db", 3)
    _file_with(tmp_path / "backup.db", 7)
    async with Store.from_url(f"sqlite:///{tmp_path / 'bot.db'}") as store:
        assert await _count(store) == 3
        (tmp_path / "bot.db").rename(tmp_path / "aside.db")
        shutil.copy(tmp_path / "backup.db", tmp_path / "bot.db")
        assert await _count(store) == 7


async def test_closing_the_store_closes_the_kept_connections(tmp_path: Path) -> None:
    _file_with(tmp_path / "bot.db", 3)
    store = Store.from_url(f"sqlite:///{tmp_path / 'bot.db'}")
    async with store:
        assert await _count(store) == 3
        kept = list(store.database._backend._pool._idle)
        assert kept
    assert all(not connection._running for connection in kept)
