"""Redis stopped and restarted under a stream of interactions at the real front door."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli.redis_server import RedisServer
from app.commands.delivery import SUPPRESS_EMBEDS
from app.interactions.responses import UNAVAILABLE_TEXT
from app.web.application import create_app
from tests.fake_discord import EPHEMERAL, FakeDiscord
from tests.faults.conftest import History, webhook_requests
from tests.signing import Signer, encode
from tests.workers.conftest import drain, interaction, worker_settings

pytestmark = pytest.mark.faults

BATCH = 5
# The front door's bound on a Redis call (REDIS_TIMEOUT), and the brief's bound on the answer.
REDIS_TIMEOUT = "1.0"
OUTAGE_ANSWER_WITHIN = 1.5


async def test_interactions_during_a_redis_outage_are_refused_and_every_other_answered_once(
    own_redis: RedisServer,
    fake_discord: FakeDiscord,
    history: History,
    tmp_path: Path,
    model_cache_dir: Path,
) -> None:
    signer = Signer()
    settings = worker_settings(
        tmp_path,
        fake_discord,
        own_redis.url,
        model_cache_dir,
        DISCORD_PUBLIC_KEY=signer.public_key_hex,
        REDIS_TIMEOUT=REDIS_TIMEOUT,
        RATE_LIMIT_PER_MINUTE="1000",
    )
    ids = {"guild_id": history.guild["id"], "channel_id": history.channel["id"]}
    # (phase, interaction, response body, seconds to answer)
    answered: list[tuple[str, dict[str, Any], dict[str, Any], float]] = []

    async def send(client: httpx.AsyncClient, phase: str) -> None:
        item = interaction(fake_discord, "stats", **ids)
        body = encode(item)
        started = time.monotonic()
        response = await client.post("/interactions", content=body, headers=signer.headers(body))
        seconds = time.monotonic() - started
        assert response.status_code == 200
        answered.append((phase, item, response.json(), seconds))

    async def batches(client: httpx.AsyncClient, phase: str, count: int) -> None:
        for _ in range(count):
            await asyncio.gather(*(send(client, phase) for _ in range(BATCH)))

    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bot") as client,
    ):
        await batches(client, "before", 3)
        await asyncio.to_thread(own_redis.stop)
        await batches(client, "outage", 3)
        await asyncio.to_thread(own_redis.start)
        await batches(client, "after", 3)

    # /stats is deferred privately: only the invoking member sees the answer.
    thinking = {"type": 5, "data": {"flags": EPHEMERAL}}
    deferred = {item["id"] for _, item, body, _ in answered if body == thinking}
    unavailable = {
        "type": 4,
        "data": {
            "content": UNAVAILABLE_TEXT,
            "flags": EPHEMERAL | SUPPRESS_EMBEDS,
            "allowed_mentions": {"parse": []},
        },
    }
    refused = {item["id"] for _, item, body, _ in answered if body == unavailable}
    assert len(answered) == 9 * BATCH
    assert deferred.isdisjoint(refused)
    assert deferred | refused == {item["id"] for _, item, _, _ in answered}
    # Which ones were refused is no accident: exactly those sent while Redis was down.
    assert refused == {item["id"] for phase, item, _, _ in answered if phase == "outage"}
    slowest = max(seconds for phase, _, _, seconds in answered if phase == "outage")
    assert slowest < OUTAGE_ANSWER_WITHIN

    results = await drain(settings)

    expected = history.stats_text()
    by_id = {item["id"]: item for _, item, _, _ in answered}
    shown_to = {
        item_id
        for item_id, item in by_id.items()
        if fake_discord.interaction(item["token"]).shown()
    }
    assert shown_to == deferred
    for item_id in deferred:
        token = by_id[item_id]["token"]
        delivered = fake_discord.interaction(token)
        assert [m["content"] for m in delivered.shown()] == [expected]
        # One final edit, sent once: nothing answered twice.
        assert len(webhook_requests(fake_discord, token)) == 1
        assert len(delivered.edits) == 1
        assert results[item_id] == "ok"
    for item_id in refused:
        assert webhook_requests(fake_discord, by_id[item_id]["token"]) == []
        assert item_id not in results
    assert fake_discord.violations == []
