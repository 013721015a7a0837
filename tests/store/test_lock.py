"""The state lock, between this process and real child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.errors import StateLockedError
from app.store.lock import LockOwner, StateLock, read_owner

ROOT = Path(__file__).resolve().parents[2]

# Takes the lock as "the worker", says so, and holds it until stdin closes or it is killed.
_HOLDER = """
import sys
from pathlib import Path
from app.store.lock import StateLock
with StateLock(Path(sys.argv[1]), "worker"):
    print("locked", flush=True)
    sys.stdin.read()
"""

# Tries the lock once as "sync command"; prints the error, exit status 3 when refused.
_CONTENDER = """
import sys
from pathlib import Path
from app.errors import StateLockedError
from app.store.lock import StateLock
try:
    with StateLock(Path(sys.argv[1]), "sync command"):
        print("acquired", flush=True)
except StateLockedError as exc:
    print(exc, flush=True)
    sys.exit(3)
"""


def _python(code: str, data_dir: Path, *, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, str(data_dir)],
        stdin=stdin,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _start_holder(data_dir: Path) -> subprocess.Popen[str]:
    holder = _python(_HOLDER, data_dir, stdin=subprocess.PIPE)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_second_process_fails_at_once_naming_the_owner(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    holder = _start_holder(data_dir)
    try:
        with pytest.raises(StateLockedError) as refused:
            StateLock(data_dir, "sync command").acquire()
        assert str(refused.value) == (
            f"the worker (pid {holder.pid}) owns {data_dir}; stop it or use the queue"
        )
        owner = read_owner(data_dir)
        assert owner is not None and (owner.pid, owner.role) == (holder.pid, "worker")
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()
    # Released on exit: now this process can take it and is the recorded owner.
    with StateLock(data_dir, "sync command") as lock:
        assert lock.held
        assert read_owner(data_dir) == LockOwner(os.getpid(), "sync command")


def test_lock_of_a_killed_owner_is_released_by_the_os(tmp_path: Path) -> None:
    holder = _start_holder(tmp_path)
    holder.kill()
    holder.wait(timeout=10)
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.close()
    holder.stdout.close()
    with StateLock(tmp_path, "worker") as lock:
        assert lock.held


def test_child_is_refused_while_this_process_holds_the_lock(tmp_path: Path) -> None:
    with StateLock(tmp_path, "worker"):
        refused = _python(_CONTENDER, tmp_path)
        out, _ = refused.communicate(timeout=30)
        assert refused.returncode == 3
        assert out.strip() == (
            f"the worker (pid {os.getpid()}) owns {tmp_path}; stop it or use the queue"
        )
    accepted = _python(_CONTENDER, tmp_path)
    out, _ = accepted.communicate(timeout=30)
    assert (accepted.returncode, out.strip()) == (0, "acquired")


def test_two_locks_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    first = StateLock(tmp_path, "worker")
    first.acquire()
    first.acquire()  # taking a held lock again is a no-op
    with pytest.raises(StateLockedError, match="the worker"):
        StateLock(tmp_path, "backup command").acquire()
    first.release()
    first.release()
    assert not first.held
    with StateLock(tmp_path, "backup command"):
        pass


def test_unreadable_owner_record_still_refuses(tmp_path: Path) -> None:
    with StateLock(tmp_path, "worker") as lock:
        lock.path.write_text("", encoding="utf-8")  # as if the owner had not written it yet
        with pytest.raises(StateLockedError, match=r"^another process owns"):
            StateLock(tmp_path, "sync command").acquire()
