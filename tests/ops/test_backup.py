"""Backup and restore: the same messages and the same search results come back."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.foreground import import_export
from app.discord.exporter import parse_export
from app.ops.backup import BackupError, restore
from app.settings import Settings
from app.state import State
from app.store.lock import StateLock

ROOT = Path(__file__).resolve().parents[2]
EXPORT = Path(__file__).resolve().parents[1] / "data" / "export_general.json"
QUERIES = ["release notes", "deployment failed", "lunch plans"]


def cli(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m app ARGS` in a child process, as an operator runs it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "REDIS_"))}
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env={**clean, **environ},
        capture_output=True,
        text=True,
        timeout=120,
    )


def env(tmp_path: Path, models: Path) -> dict[str, str]:
    return {"DATA_DIR": str(tmp_path / "data"), "MODEL_CACHE_DIR": str(models)}


async def snapshot_of(
    settings: Settings, channel: str
) -> tuple[list[tuple[int, str]], list[list[int]]]:
    state = await State.open(settings, "test")
    try:
        rows = await state.store.database.fetch_all(
            "SELECT id, content FROM messages WHERE deleted = FALSE ORDER BY id"
        )
        results = [
            [hit.id for hit in await state.index.aquery(q, channel_ids=[channel], k=5)]
            for q in QUERIES
        ]
    finally:
        await state.close()
    return [(int(r["id"]), str(r["content"])) for r in rows], results


@pytest.mark.slow
async def test_backup_then_restore_gives_back_messages_and_search(
    tmp_path: Path, model_cache_dir: Path
) -> None:
    environ = env(tmp_path, model_cache_dir)
    settings = Settings.from_env(environ)
    await import_export(settings, EXPORT)
    channel = parse_export(EXPORT).channel.id
    before = await snapshot_of(settings, channel)
    assert len(before[0]) > 10 and all(before[1])

    dest = tmp_path / "backups" / "one"
    done = cli("backup", str(dest), environ=environ)
    assert done.returncode == 0, done.stderr
    assert "backed up to" in done.stdout
    assert {p.name for p in dest.iterdir()} == {"bot.db", "chroma", "manifest.json"}
    assert not (dest.parent / "one.partial").exists()
    # A second backup never overwrites the first.
    again = cli("backup", str(dest), environ=environ)
    assert again.returncode == 1
    assert "already exists" in again.stderr

    # Lose the state: a damaged database and an empty index.
    (settings.data_dir / "bot.db").write_bytes(b"not a database")
    for wal in ("bot.db-wal", "bot.db-shm"):
        (settings.data_dir / wal).unlink(missing_ok=True)
    for item in sorted(settings.chroma_path.rglob("*"), reverse=True):
        if item.is_file():
            item.unlink()

    restored = cli("restore", str(dest), environ=environ)
    assert restored.returncode == 0, restored.stderr
    out = restored.stdout
    assert f"restored from {dest}: {len(before[0])} messages and the index" in out
    assert await snapshot_of(settings, channel) == before
    aside = list(settings.data_dir.glob("before-restore-*"))
    assert len(aside) == 1 and (aside[0] / "bot.db").read_bytes() == b"not a database"


def test_restore_refuses_while_the_worker_owns_the_state(tmp_path: Path) -> None:
    src = tmp_path / "backup"
    src.mkdir()
    connection = sqlite3.connect(src / "bot.db")
    connection.execute("CREATE TABLE messages (id INTEGER, deleted BOOLEAN)")
    connection.commit()
    connection.close()
    (src / "manifest.json").write_text('{"messages": 0, "index": false}')
    settings = Settings.from_env({"DATA_DIR": str(tmp_path / "data")})
    with (
        StateLock(settings.data_dir, "worker"),
        pytest.raises(BackupError, match="stop the worker"),
    ):
        restore(settings, src)
    assert not (settings.data_dir / "bot.db").exists()


def test_restore_refuses_a_damaged_backup(tmp_path: Path) -> None:
    src = tmp_path / "backup"
    src.mkdir()
    (src / "bot.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    (src / "manifest.json").write_text('{"messages": 0, "index": false}')
    settings = Settings.from_env({"DATA_DIR": str(tmp_path / "data")})
    with pytest.raises(BackupError, match="damaged"):
        restore(settings, src)


def test_restore_refuses_a_directory_that_is_no_backup(tmp_path: Path) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path / "data")})
    with pytest.raises(BackupError, match="not a backup"):
        restore(settings, tmp_path)
