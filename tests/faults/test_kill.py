"""A worker killed with SIGKILL part-way through a sync: the next worker run completes it.

The history pages and the index outbox are written in one transaction each, so whatever
the kill interrupted, the next run resumes from the stored cursors: the database ends up
holding exactly Discord's messages, and the index exactly the database's. On SQLite with an
embedded index, and on Postgres with a Chroma server (tests/engines.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from app.jobs import QUEUE_NAME, RUN_SYNC
from app.retrieval.index import COLLECTION, close_chroma, open_chroma
from app.settings import Settings
from app.store.db import Store
from app.store.models import IndexState
from tests.fake_discord import FakeDiscord
from tests.faults.conftest import ROOT, free_port, kill_worker_when
from tests.workers.conftest import run_worker, worker_env, worker_settings

pytestmark = pytest.mark.faults

PAGES = "GET /channels/{channel_id}/messages"


async def stored_ids(settings: Settings, channel_id: str) -> list[int]:
    """The live message ids the database holds for a channel, in id order."""
    async with Store.from_url(settings.database_url) as store:
        rows = await store.database.fetch_all(
            "SELECT id FROM messages WHERE channel_id = :c AND deleted = FALSE ORDER BY id",
            {"c": channel_id},
        )
    return [int(row["id"]) for row in rows]


async def count_in_state(settings: Settings, state: IndexState) -> int:
    """How many live messages are in one index state."""
    async with Store.from_url(settings.database_url) as store:
        return await store.count_live(index_state=state)


def index_ids(settings: Settings) -> list[int]:
    """Every message id the Chroma directory or server holds (read with no worker running)."""
    client = open_chroma(None if settings.chroma_url else settings.chroma_path, settings.chroma_url)
    try:
        got = client.get_collection(COLLECTION).get(include=[])
    finally:
        close_chroma(client)
    return [int(i) for i in got["ids"]]


def discord_ids(fake: FakeDiscord, channel_id: str) -> list[int]:
    """The message ids the fake Discord holds for a channel, in id order."""
    return sorted(int(m["id"]) for m in fake.messages[channel_id])


def kill_mid_sync(env: dict[str, str], fake: FakeDiscord, pages: int) -> None:
    """Run `python -m app worker` (its start-up sync runs) and SIGKILL it after `pages` pages."""
    kill_worker_when(env, lambda: len(fake.requests_for(PAGES)) >= pages)
    assert len(fake.requests_for(PAGES)) >= pages, "the sync never got going"


async def test_worker_killed_mid_sync_is_completed_by_the_next_run(
    fake_discord: FakeDiscord,
    tmp_path: Path,
    redis_url: str,
    model_cache_dir: Path,
    engine_env: dict[str, str],
) -> None:
    guild = fake_discord.add_guild()
    general = fake_discord.add_channel(guild["id"], "general")
    random = fake_discord.add_channel(guild["id"], "random")
    fake_discord.add_messages(general["id"], 700)
    fake_discord.add_messages(random["id"], 150, text=lambda i: f"off-topic remark {i}")
    # Slow pages, so the kill lands with the sync part-way, pages and vectors in flight.
    fake_discord.inject_delay(0.1, PAGES, times=10_000)
    settings = worker_settings(tmp_path, fake_discord, redis_url, model_cache_dir, **engine_env)
    env = {
        **os.environ,
        **worker_env(settings),
        "SYNC_GUILD_IDS": guild["id"],
        "METRICS_PORT": str(free_port()),
        "PYTHONPATH": str(ROOT),
    }
    kill_mid_sync(env, fake_discord, pages=4)

    total = len(fake_discord.messages[general["id"]]) + len(fake_discord.messages[random["id"]])
    partial = len(await stored_ids(settings, general["id"])) + len(
        await stored_ids(settings, random["id"])
    )
    assert 0 < partial < total, "the kill did not land part-way through the sync"

    # The next worker run: the dead one's job is abandoned, a new sync job completes the work.
    redis = ArqRedis.from_url(redis_url)
    try:
        await redis.enqueue_job(RUN_SYNC, [guild["id"]], [], _queue_name=QUEUE_NAME)
    finally:
        await redis.aclose()
    results = await run_worker(settings, [])
    assert f"2 channels, {total - partial} new, 0 edited, 0 deleted" in str(results)

    for channel in (general, random):
        assert await stored_ids(settings, channel["id"]) == discord_ids(fake_discord, channel["id"])
    assert await count_in_state(settings, IndexState.INDEXED) == total
    assert await count_in_state(settings, IndexState.PENDING) == 0
    vectors = index_ids(settings)
    assert len(vectors) == len(set(vectors)) == total
    expected = discord_ids(fake_discord, general["id"]) + discord_ids(fake_discord, random["id"])
    assert set(vectors) == set(expected)
