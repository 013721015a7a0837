"""A backfill killed with SIGKILL at random points resumes with no gap and no duplicate."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

from app.store.db import Store

TOP = 6_000  # message ids TOP..1, newest first, 100 per page

# A backfill that resumes from the stored cursor, like the sync job.
_BACKFILL = """
import asyncio, sys
from datetime import UTC, datetime
from app.store.db import Store
from app.store.models import StoredMessage

async def main(url: str, top: int) -> None:
    async with Store.from_url(url) as store:
        state = await store.channel_state("c1")
        before = state.backfill_before_id if state and state.backfill_before_id else top + 1
        while before > 1:
            ids = range(before - 1, max(before - 101, 0), -1)
            page = [
                StoredMessage(id=i, channel_id="c1", author_id="u1", content=f"m{i}",
                              timestamp=datetime.now(UTC))
                for i in ids
            ]
            before = min(ids)
            await store.save_page("c1", page, backfill_before=before,
                                  backfill_complete=before == 1)
            print(before, flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _start(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _BACKFILL, url, str(TOP)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )


def _kill_after(url: str, *, pages: int, delay: float) -> None:
    child = _start(url)
    assert child.stdout is not None
    for _ in range(pages):
        assert child.stdout.readline()
    time.sleep(delay)  # land anywhere inside the next page's transaction
    child.kill()
    child.wait()
    child.stdout.close()


async def _check_consistent(url: str) -> int:
    async with Store.from_url(url) as store:
        state = await store.channel_state("c1")
        cursor = state.backfill_before_id if state and state.backfill_before_id else TOP + 1
        stored = await store.live_ids_since("c1", 0)
    # Exactly the ids from the cursor up: nothing below it, nothing missing above it.
    assert sorted(stored) == list(range(cursor, TOP + 1))
    return cursor


async def test_killed_backfill_resumes_without_gap(database_url: str) -> None:
    url = database_url
    async with Store.from_url(url) as store:
        await store.migrate()
    rng = random.Random(7)
    cursors = []
    for _ in range(3):
        _kill_after(url, pages=rng.randint(2, 8), delay=rng.uniform(0, 0.02))
        cursors.append(await _check_consistent(url))
    assert cursors == sorted(cursors, reverse=True) and cursors[-1] < TOP

    child = _start(url)
    child.communicate(timeout=120)
    assert child.returncode == 0
    assert await _check_consistent(url) == 1
    async with Store.from_url(url) as store:
        state = await store.channel_state("c1")
        assert state is not None and state.backfill_complete
        assert await store.count_live(["c1"]) == TOP
