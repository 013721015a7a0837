"""A deleted or damaged index: /health says so, `python -m app reindex` rebuilds it from the
database, and searches come back as they were."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from app.retrieval.index import CHROMA_FILE
from app.settings import Settings
from app.state import State
from health import HealthChecker
from tests.faults.conftest import ROOT, free_port
from tests.workers import conftest as workers
from tests.workers.conftest import run_worker, worker_env
from workers.worker import build_worker

pytestmark = pytest.mark.faults


# The worker tests' fixtures: a guild of a public and a mods-only channel, synced.
guild = workers.guild
settings = workers.settings
server = workers.server

Check = dict[str, Any]


async def searches(settings: Settings, server: dict[str, Any]) -> list[list[int]]:
    """The ids, best first, that a few searches return."""
    general, mods = server["general"]["id"], server["mods"]["id"]
    # The public channel repeats its small talk word for word, and equal vectors may come
    # back in either order: these searches rank messages whose texts are all different.
    queries: list[tuple[str, list[str] | None, int]] = [
        ("when is the staging database password rotated", [general], 1),
        ("moderation note", [mods], 5),
        ("moderation note 5", None, 3),
        ("launch codename", [general, mods], 1),
    ]
    state = await State.open(settings, "searches")
    try:
        return [
            [hit.id for hit in await state.index.aquery(text, channel_ids=channels, k=k)]
            for text, channels, k in queries
        ]
    finally:
        await state.close()


async def integrity(settings: Settings) -> Check:
    """The integrity check of GET /health, as the web process computes it."""
    assert settings.redis_url is not None
    redis = Redis.from_url(settings.redis_url)
    try:
        report = await HealthChecker(redis, settings.data_dir).run()
    finally:
        await redis.aclose()
    check: Check = report.checks["integrity"]
    return check


async def wait_for(settings: Settings, wanted: Callable[[Check], bool]) -> Check:
    """Poll /health's integrity check until `wanted` holds (the worker reports every 5 s)."""
    for _ in range(300):
        check = await integrity(settings)
        if wanted(check):
            return check
        await asyncio.sleep(0.1)
    raise AssertionError(f"/health never showed the wanted integrity check: {check}")


def app_command(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m app ARGS` against the worker's state."""
    env = {
        **os.environ,
        **worker_env(settings),
        "METRICS_PORT": str(free_port()),
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def reindex(settings: Settings) -> str:
    """`python -m app reindex`; its one line of output."""
    done = app_command(settings, "reindex")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_an_index_deleted_under_the_worker_shows_and_reindex_rebuilds_it(
    server: dict[str, Any], settings: Settings
) -> None:
    before = await searches(settings, server)
    assert all(before) and server["planted"]["id"] in {str(i) for i in before[0]}

    assert settings.redis_url is not None
    worker = build_worker(
        settings, ArqRedis.from_url(settings.redis_url), handle_signals=False, poll_delay=0.05
    )
    worker.cron_jobs = []
    running = asyncio.create_task(worker.async_run())
    try:
        healthy = await wait_for(settings, lambda c: c["ok"])
        shutil.rmtree(settings.chroma_path)
        gone = await wait_for(settings, lambda c: not c["ok"])
    finally:
        await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert healthy == {"ok": True, "checked_at": None}
    # Whether Chroma has re-created an empty file there yet decides which symptom shows.
    assert gone["error"] in (
        f"the index directory {settings.chroma_path} is gone",
        "the index holds 0 vectors but 46 messages were indexed",
    ) or gone["error"].startswith("could not count the index")
    assert "python -m app reindex" in gone["hint"]

    # A restarted worker opens a new, empty index; the outbox says 46 messages were indexed.
    await run_worker(settings, [])
    empty = await integrity(settings)
    assert not empty["ok"]
    assert empty["error"] == "the index holds 0 vectors but 46 messages were indexed"

    assert reindex(settings).startswith("reindexed 46 messages; the index holds 46;")
    assert await searches(settings, server) == before
    await run_worker(settings, [])
    assert (await integrity(settings))["ok"]


async def test_a_damaged_index_stops_the_worker_clearly_and_reindex_rebuilds_it(
    server: dict[str, Any], settings: Settings
) -> None:
    before = await searches(settings, server)
    chroma_file = settings.chroma_path / CHROMA_FILE
    chroma_file.write_bytes(os.urandom(chroma_file.stat().st_size))

    started = app_command(settings, "worker")
    assert started.returncode == 1
    lines = started.stderr.strip().splitlines()
    assert lines[-1].startswith("error: could not open the Chroma directory")
    assert "python -m app reindex" in lines[-1]
    assert "Traceback" not in started.stderr

    assert reindex(settings).startswith("reindexed 46 messages; the index holds 46;")
    damaged = settings.chroma_path.with_name(settings.chroma_path.name + ".damaged")
    assert (damaged / CHROMA_FILE).is_file()
    assert await searches(settings, server) == before
    await run_worker(settings, [])
    assert (await integrity(settings))["ok"]
