"""One writer of local state at a time: an exclusive `flock` on `DATA_DIR/state.lock`.

The SQLite file and the Chroma directory are written by one process (the worker, or a command
line tool when no worker runs). The lock is advisory and non-blocking: a second would-be owner
fails at once, naming the owner recorded in the file. The kernel drops the lock when the owner
exits or crashes, so a stale file never blocks anyone; the file itself is never deleted (a
deleted-and-recreated lock file would let two processes each hold a lock on a different inode).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from app.errors import StateLockedError

logger = logging.getLogger(__name__)

LOCK_FILE = "state.lock"


@dataclass(frozen=True, slots=True)
class LockOwner:
    """Who holds the state lock, as the holder wrote it into the lock file."""

    pid: int | None
    role: str


class StateLock:
    """An exclusive, non-blocking lock on a data directory, held until `release`."""

    def __init__(self, data_dir: Path, role: str) -> None:
        self._data_dir = data_dir
        self._role = role
        self._file: IO[str] | None = None

    @property
    def path(self) -> Path:
        """The lock file."""
        return self._data_dir / LOCK_FILE

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._file is not None

    def acquire(self) -> None:
        """Take the lock or raise `StateLockedError` naming the current owner."""
        if self._file is not None:
            return
        self._data_dir.mkdir(parents=True, exist_ok=True)
        # "a+" neither truncates the owner's record nor fails when the file is missing.
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            owner = read_owner(self._data_dir)
            raise StateLockedError(_describe(owner, self._data_dir)) from None
        except BaseException:
            handle.close()
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "role": self._role}))
        handle.flush()
        self._file = handle
        logger.info(
            "state lock on %s taken by the %s (pid %d)", self._data_dir, self._role, os.getpid()
        )

    def release(self) -> None:
        """Give the lock up (closing the file releases the flock)."""
        if self._file is None:
            return
        handle, self._file = self._file, None
        handle.close()

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def read_owner(data_dir: Path) -> LockOwner | None:
    """The owner recorded in the lock file, or None if there is none to read."""
    try:
        raw = (data_dir / LOCK_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        record = json.loads(raw)
        pid = record.get("pid")
        return LockOwner(pid=int(pid) if pid is not None else None, role=str(record["role"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        # The owner may be between taking the lock and writing its record.
        return None


def _describe(owner: LockOwner | None, data_dir: Path) -> str:
    who = "another process" if owner is None else f"the {owner.role} (pid {owner.pid})"
    return f"{who} owns {data_dir}; stop it or use the queue"
