"""Two web and two worker processes on one Redis, PostgreSQL and Chroma server.

The scale-out shape for real: every process is `python -m app ...` with `DATABASE_URL`,
`CHROMA_URL` and `REDIS_URL` set; questions arrive signed at both web processes; Discord is
the fake. The small bundled model keeps the answers short (ANSWER_DEADLINE caps them too):
what is checked is who answers, and how often, not how well.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from app.cli.foreground import sync
from app.jobs import RESULT_KEY_PREFIX
from app.llm.model_file import bundled_model_path
from app.settings import Settings
from tests.engines import POSTGRES
from tests.fake_discord import EVERYONE_PERMISSIONS, FakeDiscord
from tests.faults.conftest import repeated_after_success
from tests.scaleout.cluster import Cluster
from tests.signing import Signer, encode
from tests.workers.conftest import FILLER, PLANTED, interaction, worker_settings

pytestmark = [pytest.mark.slow, pytest.mark.servers]

ORIGINAL = "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original"
ANSWERED = ("ok", "cut_short")


@pytest.fixture
def engine() -> str:
    """These tests are about the shared engines only."""
    return POSTGRES


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
async def channel(
    fake_discord: FakeDiscord,
    engine_env: dict[str, str],
    redis_url: str,
    model_cache_dir: Path,
    tmp_path: Path,
) -> dict[str, Any]:
    """A guild channel of 40 messages, synced into PostgreSQL and the Chroma server."""
    guild = fake_discord.add_guild("Scale Club")
    general = fake_discord.add_channel(guild["id"], "general")
    for i in range(40):
        fake_discord.add_message(general["id"], FILLER[i % len(FILLER)], author="alice")
    fake_discord.add_message(general["id"], PLANTED, author="olivia")
    cli = tmp_path / "cli"
    settings = worker_settings(cli, fake_discord, redis_url, model_cache_dir, **engine_env)
    summary = await sync(settings, [], [general["id"]])
    assert not isinstance(summary, str) and summary.new == 41
    return {"guild": guild, "general": general}


@pytest.fixture
def cluster(
    fake_discord: FakeDiscord,
    engine_env: dict[str, str],
    redis_url: str,
    model_cache_dir: Path,
    signer: Signer,
    tmp_path: Path,
) -> Iterator[Cluster]:
    settings = worker_settings(tmp_path, fake_discord, redis_url, model_cache_dir)
    env = {
        **engine_env,
        "REDIS_URL": redis_url,
        "MODEL_CACHE_DIR": str(model_cache_dir),
        "MODEL_PATH": str(bundled_model_path()),
        "DISCORD_API_BASE": settings.discord_api_base,
        "DISCORD_BOT_TOKEN": settings.discord_bot_token or "",
        "DISCORD_APPLICATION_ID": fake_discord.application_id,
        "DISCORD_PUBLIC_KEY": signer.public_key_hex,
        "SYNC_RECHECK_DAYS": "0",
        "LLM_THREADS": "1",
        "ANSWER_DEADLINE": "3",
        "RATE_LIMIT_PER_MINUTE": "1000",
        # A hundred questions at once must all be taken; the queue also holds cron jobs.
        "QUEUE_LIMIT": "1000",
        "LOG_LEVEL": "INFO",
    }
    running = Cluster(env, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def asks(fake: FakeDiscord, channel: dict[str, Any], count: int) -> list[dict[str, Any]]:
    return [
        interaction(
            fake,
            "ask",
            {"question": f"When is the staging migration? ({i})"},
            guild_id=channel["guild"]["id"],
            channel_id=channel["general"]["id"],
            permissions=EVERYONE_PERMISSIONS,
        )
        for i in range(count)
    ]


async def post_all(urls: list[str], signer: Signer, items: list[dict[str, Any]]) -> None:
    """Post each interaction, signed, to the web processes in turn; all must be deferred."""
    async with httpx.AsyncClient(timeout=10) as http:

        async def post(i: int, item: dict[str, Any]) -> None:
            body = encode(item)
            url = urls[i % len(urls)] + "/interactions"
            response = await http.post(url, content=body, headers=signer.headers(body))
            assert response.status_code == 200, response.text
            assert response.json()["type"] == 5, response.text

        await asyncio.gather(*(post(i, item) for i, item in enumerate(items)))


async def results(redis_url: str, items: list[dict[str, Any]], within: float) -> dict[str, Any]:
    """Wait until every interaction's job has a result; return them by interaction id."""
    from arq.jobs import deserialize_result

    redis = aioredis.Redis.from_url(redis_url)
    deadline = time.monotonic() + within
    try:
        while True:
            raw = await redis.mget([RESULT_KEY_PREFIX + i["id"] for i in items])
            if all(r is not None for r in raw) or time.monotonic() > deadline:
                return {
                    item["id"]: deserialize_result(r).result if r is not None else None
                    for item, r in zip(items, raw, strict=True)
                }
            await asyncio.sleep(0.5)
    finally:
        await redis.aclose()


def delivered_once(fake: FakeDiscord, item: dict[str, Any]) -> bool:
    """The member sees exactly one message: the deferred one, edited into the answer."""
    seen = fake.interaction(item["token"])
    return seen.original is not None and bool(seen.original["content"]) and not seen.followups


async def test_a_hundred_questions_over_two_web_processes_are_answered_once_by_both_workers(
    fake_discord: FakeDiscord,
    channel: dict[str, Any],
    cluster: Cluster,
    redis_url: str,
    signer: Signer,
) -> None:
    for name in ("worker-a", "worker-b"):
        cluster.start(name, "worker")
    webs = [cluster.start(name, "web") for name in ("web-a", "web-b")]
    urls = [cluster.wait_for_web(web.name) for web in webs]
    await cluster.wait_for_workers(redis_url, ["worker-a", "worker-b"], within=240)

    items = asks(fake_discord, channel, 100)
    await post_all(urls, signer, items)
    outcomes = await results(redis_url, items, within=480)

    assert set(outcomes.values()) <= set(ANSWERED), outcomes
    assert all(delivered_once(fake_discord, item) for item in items)
    assert repeated_after_success(fake_discord) == []
    by_worker = {n: cluster.answered(n).get("ask", 0.0) for n in ("worker-a", "worker-b")}
    assert sum(by_worker.values()) == 100, by_worker
    assert min(by_worker.values()) >= 20, by_worker  # both took a fair share
    assert fake_discord.violations == []


async def test_a_worker_killed_mid_answer_leaves_one_answer_given_by_the_other(
    fake_discord: FakeDiscord,
    channel: dict[str, Any],
    cluster: Cluster,
    redis_url: str,
    signer: Signer,
) -> None:
    cluster.start("worker-a", "worker")
    url = cluster.wait_for_web(cluster.start("web", "web").name)
    await cluster.wait_for_workers(redis_url, ["worker-a"], within=240)
    # The first edit of the answer hangs, so the kill lands while the answer is in flight.
    fake_discord.inject_delay(30.0, ORIGINAL, times=1)
    (ask,) = asks(fake_discord, channel, 1)
    await post_all([url], signer, [ask])
    for _ in range(2400):  # 2 minutes at most
        if fake_discord.requests_for(ORIGINAL):
            break
        await asyncio.sleep(0.05)
    assert fake_discord.requests_for(ORIGINAL), cluster.log_tail("worker-a")
    cluster.kill("worker-a")

    cluster.start("worker-b", "worker")
    await cluster.wait_for_workers(redis_url, ["worker-b"], within=240)
    # worker-b frees the job once worker-a's heartbeat has expired (15 s), then answers it.
    outcomes = await results(redis_url, [ask], within=180)
    assert outcomes[ask["id"]] in ANSWERED, cluster.log_tail("worker-b")
    assert delivered_once(fake_discord, ask)
    assert cluster.answered("worker-b").get("ask") == 1
    assert "left in progress by stopped worker" in cluster.log_tail("worker-b", 20_000)


async def test_a_sync_and_a_reindex_run_while_both_workers_answer(
    fake_discord: FakeDiscord,
    channel: dict[str, Any],
    cluster: Cluster,
    redis_url: str,
    signer: Signer,
    engine_env: dict[str, str],
    model_cache_dir: Path,
    tmp_path: Path,
) -> None:
    busy = fake_discord.add_channel(channel["guild"]["id"], "busy")
    fake_discord.add_messages(busy["id"], 1500, authors=["bob", "carol"])
    for name in ("worker-a", "worker-b"):
        cluster.start(name, "worker")
    url = cluster.wait_for_web(cluster.start("web", "web").name)
    await cluster.wait_for_workers(redis_url, ["worker-a", "worker-b"], within=240)

    sync_busy = interaction(
        fake_discord,
        "sync",
        guild_id=channel["guild"]["id"],
        channel_id=busy["id"],
        permissions=EVERYONE_PERMISSIONS | (1 << 5),
    )
    first = asks(fake_discord, channel, 10)
    await post_all([url], signer, [sync_busy, *first])
    synced = await results(redis_url, [sync_busy], within=300)
    assert synced[sync_busy["id"]] == "ok"
    report = fake_discord.interaction(sync_busy["token"]).original
    assert report is not None and "1500 new" in report["content"]

    # A reindex from the command line goes to a worker; questions keep coming meanwhile.
    settings = Settings.from_env(
        {
            **cluster.env,
            "DATA_DIR": str(tmp_path / "cli"),
            "MODEL_CACHE_DIR": str(model_cache_dir),
        }
    )
    from app.cli.foreground import reindex

    reindexing = asyncio.create_task(reindex(settings))
    second = asks(fake_discord, channel, 10)
    await post_all([url], signer, second)
    line = await asyncio.wait_for(reindexing, timeout=300)
    assert line.startswith("reindexed 1541 messages"), line
    outcomes = await results(redis_url, first + second, within=300)
    assert set(outcomes.values()) <= set(ANSWERED), outcomes
    assert all(delivered_once(fake_discord, item) for item in first + second)
    assert fake_discord.violations == []
