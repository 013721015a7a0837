"""Backups, restores and upkeep of the local state (the SQLite file and the Chroma directory).

A backup is a directory: `bot.db` (taken with SQLite's online backup API, so it
is consistent even while the worker writes), `chroma/` (every SQLite file in it
through the same API, the rest copied) and `manifest.json`. It is written under
a temporary name and renamed when complete, so a directory named DEST is always
whole. The database is copied before the index: a vector the index gained in
between is harmless (search keeps only live rows, and a re-sent vector replaces
itself), and `reindex` rebuilds the index from the database at any time.

`python -m app backup` hands the copy to the worker when it runs (see
`app.cli.foreground.backup`); `restore` never runs beside it. A restore keeps the opt-outs
of the state it replaces: a member who opted out after the backup was taken stays opted
out, their messages withheld again in the restored database (`app.store.privacy`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from app import __version__
from app.errors import BotError, StateLockedError
from app.settings import Settings
from app.store.lock import StateLock

logger = logging.getLogger(__name__)

MANIFEST: Final = "manifest.json"
DATABASE_FILE: Final = "bot.db"
INDEX_DIR: Final = "chroma"
_SQLITE_SUFFIXES: Final = ("-wal", "-shm", "-journal")
INTEGRITY_ROWS: Final = 20


class BackupError(BotError):
    """A backup or restore cannot be made; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What a backup or restore copied."""

    path: Path
    messages: int
    index: bool
    seconds: float

    def line(self, verb: str) -> str:
        """One line for the terminal."""
        index = "and the index" if self.index else "(no local index)"
        return f"{verb} {self.path}: {self.messages} messages {index}, {self.seconds:.1f} s"


def sqlite_file(settings: Settings) -> Path:
    """The SQLite file of DATABASE_URL; backups cover the SQLite store only."""
    parts = urlsplit(settings.database_url)
    if not parts.scheme.startswith("sqlite"):
        raise BackupError(
            "DATABASE_URL is not SQLite: back the database up with its own tools (pg_dump)"
        )
    path = settings.database_url.split(":///", 1)[-1].split("?", 1)[0]
    return Path(path)


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API), as one file."""
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            # A backup is one self-contained file, not a WAL pair.
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def copy_index(source: Path, target: Path) -> None:
    """Copy a Chroma directory; its SQLite files through the backup API."""
    for directory, _, files in os.walk(source):
        relative = Path(directory).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            if name.endswith(_SQLITE_SUFFIXES):
                continue
            path = Path(directory) / name
            if _is_sqlite(path):
                copy_sqlite(path, target / relative / name)
            else:
                shutil.copy2(path, target / relative / name)


def snapshot(settings: Settings, dest: Path) -> BackupResult:
    """Write a backup of the local state to `dest` (which must not exist yet)."""
    started = time.monotonic()
    database = sqlite_file(settings)
    if not database.is_file():
        raise BackupError(f"there is no database at {database} to back up")
    if dest.exists():
        raise BackupError(f"{dest} already exists; name a new directory")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    copy_sqlite(database, partial / DATABASE_FILE)
    with_index = settings.chroma_url is None and settings.chroma_path.is_dir()
    if with_index:
        copy_index(settings.chroma_path, partial / INDEX_DIR)
    messages = _count_messages(partial / DATABASE_FILE)
    manifest = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": __version__,
        "messages": messages,
        "index": with_index,
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    partial.rename(dest)
    return BackupResult(dest, messages, with_index, time.monotonic() - started)


def restore(settings: Settings, src: Path, clock: Callable[[], float] = time.time) -> str:
    """`python -m app restore SRC`: replace the local state by a backup; never while in use."""
    started = time.monotonic()
    src = src.resolve()
    manifest = _read_manifest(src)
    problems = _integrity(src / DATABASE_FILE)
    if problems:
        raise BackupError(f"{src / DATABASE_FILE} is damaged: {problems[0]}")
    lock = StateLock(settings.data_dir, "restore command")
    try:
        lock.acquire()
    except StateLockedError as exc:
        raise BackupError(f"{exc}: stop the worker before restoring") from None
    try:
        database = sqlite_file(settings)
        opted_out = _opt_outs(database)
        aside = settings.data_dir / f"before-restore-{int(clock())}"
        aside.mkdir(parents=True)
        for suffix in ("", *_SQLITE_SUFFIXES):
            current = database.with_name(database.name + suffix)
            if current.exists():
                current.rename(aside / current.name)
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / DATABASE_FILE, database)
        with_index = bool(manifest.get("index")) and settings.chroma_url is None
        if with_index:
            if settings.chroma_path.exists():
                settings.chroma_path.rename(aside / INDEX_DIR)
            shutil.copytree(src / INDEX_DIR, settings.chroma_path)
        if opted_out:
            asyncio.run(_keep_opt_outs(settings.database_url, opted_out))
    finally:
        lock.release()
    logger.info("restored %s; the previous state is kept in %s", src, aside)
    result = BackupResult(src, int(manifest.get("messages", 0)), with_index, 0.0)
    line = result.line("restored from")
    line = line.rsplit(",", 1)[0] + f", {time.monotonic() - started:.1f} s"
    if not with_index:
        line += "; run `python -m app reindex` to rebuild the index"
    if opted_out:
        line += f"; the {len(opted_out)} opt-outs of the replaced state are kept"
    return f"{line}; the previous state is in {aside}"


def _opt_outs(database: Path) -> list[tuple[str, str]]:
    """Who opted out, and when, by the database about to be replaced (none if unreadable)."""
    if not database.is_file():
        return []
    try:
        connection = sqlite3.connect(database)
        try:
            rows = connection.execute("SELECT user_id, at FROM opted_out").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError:
        return []
    return [(str(user_id), str(at)) for user_id, at in rows]


async def _keep_opt_outs(url: str, opted_out: list[tuple[str, str]]) -> None:
    """Opt the members out again in the restored database (migrated first: it may be older)."""
    from app.store.db import Store
    from app.store.models import parse_time

    async with Store.from_url(url) as store:
        await store.migrate()
        for user_id, at in opted_out:
            await store.opt_out(user_id, at=parse_time(at))


def _read_manifest(src: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{src} is not a backup made by `python -m app backup`: {exc}") from None
    if not (src / DATABASE_FILE).is_file():
        raise BackupError(f"{src} has no {DATABASE_FILE}")
    if manifest.get("index") and not (src / INDEX_DIR).is_dir():
        raise BackupError(f"{src} has no {INDEX_DIR}/ directory although its manifest says so")
    return manifest


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"


def _count_messages(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        row = connection.execute("SELECT COUNT(*) FROM messages WHERE deleted = FALSE").fetchone()
    finally:
        connection.close()
    return int(row[0])


def _integrity(path: Path) -> list[str]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute(f"PRAGMA integrity_check({INTEGRITY_ROWS})").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        connection.close()
    found = [str(row[0]) for row in rows]
    return [] if found == ["ok"] else found
