"""Schema migrations (on SQLite and Postgres) and the SQLite connection settings."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.store.db import BUSY_TIMEOUT_MS, Store, open_database
from app.store.migrations import MIGRATIONS, Migration, render
from app.store.models import StoredMessage


async def _tables(url: str) -> set[str]:
    async with Store.from_url(url) as store:
        if store.is_sqlite:
            query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            query = "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'"
        rows = await store.database.fetch_all(query)
    return {str(row["name"]) for row in rows}


async def test_migrate_from_empty_then_rerun(database_url: str) -> None:
    async with Store.from_url(database_url) as store:
        assert await store.migrate() == [m.version for m in MIGRATIONS]
        assert await store.migrate() == []
    assert {"messages", "channels", "roles", "schema_version"} <= await _tables(database_url)
    async with Store.from_url(database_url) as store:
        assert await store.migrate() == []
        versions = await store.database.fetch_all("SELECT version FROM schema_version")
    assert sorted(row["version"] for row in versions) == [m.version for m in MIGRATIONS]


async def test_appending_a_migration_applies_only_it(database_url: str) -> None:
    url = database_url
    async with Store.from_url(url) as store:
        await store.migrate()
    audit = Migration(
        len(MIGRATIONS) + 1,
        "audit",
        ("CREATE TABLE audit (id INTEGER PRIMARY KEY, at DATETIME NOT NULL, what TEXT)",),
    )
    async with Store(open_database(url), (*MIGRATIONS, audit)) as store:
        assert await store.migrate() == [audit.version]
        assert await store.migrate() == []
    assert "audit" in await _tables(url)


async def test_failed_migration_is_rolled_back(database_url: str) -> None:
    url = database_url
    broken = Migration(
        len(MIGRATIONS) + 1,
        "broken",
        ("CREATE TABLE half (id INTEGER PRIMARY KEY)", "CREATE TABLE messages (id INTEGER)"),
    )
    async with Store(open_database(url), (*MIGRATIONS, broken)) as store:
        with pytest.raises(Exception, match="already exists"):
            await store.migrate()
        versions = await store.database.fetch_all("SELECT version FROM schema_version")
    assert sorted(row["version"] for row in versions) == [m.version for m in MIGRATIONS]
    assert "half" not in await _tables(url)


async def test_migrations_must_be_numbered_in_order(tmp_path: Path) -> None:
    gap = Migration(len(MIGRATIONS) + 2, "gap", ("SELECT 1",))
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    async with Store(open_database(url), (*MIGRATIONS, gap)) as store:
        with pytest.raises(ValueError, match=r"1\.\.n in order"):
            await store.migrate()


def test_postgres_rendering() -> None:
    sql = "CREATE TABLE t (id INTEGER PRIMARY KEY, at DATETIME NOT NULL, n INTEGER)"
    assert render(sql, "sqlite") == sql
    assert render(sql, "postgresql") == (
        "CREATE TABLE t (id BIGINT PRIMARY KEY, at TEXT NOT NULL, n INTEGER)"
    )


async def test_wal_busy_timeout_and_foreign_keys_are_set(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "bot.db"  # the directory is made on connect
    async with Store.from_url(f"sqlite:///{path}") as store:
        await store.migrate()
        assert await store.database.fetch_val("PRAGMA busy_timeout") == BUSY_TIMEOUT_MS
        assert await store.database.fetch_val("PRAGMA foreign_keys") == 1
        async with store.database.transaction():  # a connection of its own, same settings
            assert await store.database.fetch_val("PRAGMA busy_timeout") == BUSY_TIMEOUT_MS
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            await store.database.execute(
                "INSERT INTO messages (id, channel_id, author_id, content, timestamp, "
                "content_hash) VALUES (1, 'unknown', 'u', 'x', 't', 'h')"
            )
    with sqlite3.connect(path) as conn:  # persistent in the file
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_writer_waits_for_a_busy_database(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with Store.from_url(f"sqlite:///{path}") as store:
        await store.migrate()
        locked = threading.Event()

        def hold_write_lock() -> None:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(0.6)
            conn.execute("COMMIT")
            conn.close()

        holder = threading.Thread(target=hold_write_lock)
        holder.start()
        await asyncio.to_thread(locked.wait)
        started = time.monotonic()
        message = StoredMessage(1, "c1", "u1", "hello", datetime.now(UTC))
        result = await store.save_page("c1", [message])
        waited = time.monotonic() - started
        await asyncio.to_thread(holder.join)
    assert result.new == (1,)
    assert 0.3 < waited < BUSY_TIMEOUT_MS / 1000
