"""Connecting to a Postgres store: the driver, the server, and several migrators at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.redis_server import free_port
from app.errors import SettingsError
from app.store.db import Store, redacted
from app.store.migrations import MIGRATIONS
from tests.engines import PostgresServer

ROOT = Path(__file__).resolve().parents[2]


async def test_a_missing_driver_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if asyncpg were not installed: the backend module imports it afresh and fails.
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    monkeypatch.delitem(sys.modules, "databases.backends.postgres", raising=False)
    with pytest.raises(SettingsError, match=r"^DATABASE_URL: .*asyncpg is not installed"):
        Store.from_url("postgresql://bot@127.0.0.1:5432/bot")


async def test_a_refused_connection_names_the_variable_without_the_password() -> None:
    url = f"postgresql://bot:s3cret@127.0.0.1:{free_port()}/bot"
    with pytest.raises(SettingsError) as caught:
        async with Store.from_url(url):
            pass
    message = str(caught.value)
    assert message.startswith("DATABASE_URL: cannot connect to postgresql://bot:***@127.0.0.1:")
    assert "s3cret" not in message and "\n" not in message


async def test_an_unknown_database_or_user_names_the_variable(
    postgres_server: PostgresServer,
) -> None:
    for url in (
        postgres_server.url("no_such_database"),
        f"postgresql://nobody_here@127.0.0.1:{postgres_server.port}/postgres",
    ):
        with pytest.raises(SettingsError, match=r"^DATABASE_URL: cannot connect to .*exist"):
            async with Store.from_url(url):
                pass


async def test_the_postgres_scheme_works_too(postgres_server: PostgresServer) -> None:
    name = await postgres_server.create_database()
    url = postgres_server.url(name).replace("postgresql://", "postgres://")
    async with Store.from_url(url) as store:
        assert await store.migrate() == [m.version for m in MIGRATIONS]
    await postgres_server.drop_database(name)


async def test_workers_starting_together_migrate_once(postgres_server: PostgresServer) -> None:
    name = await postgres_server.create_database()
    stores = [Store.from_url(postgres_server.url(name)) for _ in range(4)]
    try:
        for store in stores:
            await store.connect()
        applied = await asyncio.gather(*(store.migrate() for store in stores))
        # Each migration is applied by exactly one of them; which one may differ per
        # migration, since each migration is a transaction of its own.
        assert sorted(v for versions in applied for v in versions) == [
            m.version for m in MIGRATIONS
        ]
        versions = await stores[0].database.fetch_all("SELECT version FROM schema_version")
        assert sorted(int(r["version"]) for r in versions) == [m.version for m in MIGRATIONS]
    finally:
        for store in stores:
            await store.close()
        await postgres_server.drop_database(name)


def test_redacted_hides_only_the_password() -> None:
    assert redacted("postgresql://u:pw@db:5432/bot") == "postgresql://u:***@db:5432/bot"
    assert redacted("postgresql://u@db/bot") == "postgresql://u@db/bot"
    assert redacted("sqlite:///data/bot.db") == "sqlite:///data/bot.db"


def test_sync_against_an_unreachable_server_says_so_in_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"postgresql://bot:pw@127.0.0.1:{free_port()}/bot",
        "DISCORD_BOT_TOKEN": "token",
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "ERROR",
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", "sync", "--channel", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: DATABASE_URL: cannot connect to postgresql://bot:***@")
    assert done.stderr.count("\n") == 1, done.stderr
