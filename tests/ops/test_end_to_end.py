"""A full flow (web, queue, worker, fake Discord) with production logging: no secret is logged,
the interaction id is on the web's and the worker's lines, the audit trail and metrics follow."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from app.jobs import WORKER_REPORT_KEY
from app.logs import configure_logging
from app.ops.audit import read_audit
from app.settings import Settings
from app.web.application import create_app
from tests.fake_discord import DEFAULT_TOKEN, FakeDiscord
from tests.signing import Signer, encode
from tests.workers.conftest import PLANTED, delivered, interaction, run_worker
from workers.metrics import WorkerMetrics


@pytest.fixture
def production_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The entry points' logging (JSON, secrets scrubbed) at DEBUG, written to a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    configure_logging("DEBUG", "json", [DEFAULT_TOKEN])
    yield buffer
    root.handlers[:], level = saved
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = False


@pytest.mark.slow
async def test_a_full_flow_logs_no_secret(
    fake_discord: FakeDiscord,
    server: dict[str, Any],
    settings: Settings,
    production_log: io.StringIO,
) -> None:
    signer = Signer()
    items = [
        interaction(
            fake_discord,
            "search",
            {"query": "when is the database password rotated"},
            guild_id=server["guild"]["id"],
            channel_id=server["general"]["id"],
        ),
        interaction(
            fake_discord, "stats", guild_id=server["guild"]["id"], channel_id=server["mods"]["id"]
        ),
    ]
    web_settings = Settings.from_env(
        {"REDIS_URL": settings.redis_url or "", "DISCORD_PUBLIC_KEY": signer.public_key_hex}
    )
    app = create_app(web_settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        for item in items:
            body = encode(item)
            response = await http.post("/interactions", content=body, headers=signer.headers(body))
            assert response.json()["type"] == 5
    metrics = WorkerMetrics(CollectorRegistry())
    results = await run_worker(settings, [], metrics=metrics)
    assert results[items[0]["id"]] == "ok"
    assert PLANTED[:40] in delivered(fake_discord, items[0])

    lines = production_log.getvalue().splitlines()
    assert len(lines) > 20
    secrets = [DEFAULT_TOKEN, *(item["token"] for item in items), "Authorization"]
    for line in lines:
        for secret in secrets:
            assert secret not in line, line
    records = [json.loads(line) for line in lines]
    for item in items:
        mine = [r for r in records if r.get("interaction_id") == item["id"]]
        assert any(r["logger"] == "app.interactions.endpoint" for r in mine)
        assert any(r["message"] == "job done" for r in mine)

    # The audit trail holds both commands; the metrics and the worker's report followed.
    entries = await read_audit(settings, 10)
    assert {(e.interaction_id, e.command) for e in entries} == {
        (items[0]["id"], "search"),
        (items[1]["id"], "stats"),
    }
    assert all(e.user_id and e.channel_id and e.latency_ms >= 0 for e in entries)
    value = metrics.registry.get_sample_value
    assert value("commands_total", {"command": "search", "outcome": "ok"}) == 1
    assert value("worker_jobs_total", {"name": "handle_interaction", "outcome": "ok"}) == 2
    assert value("vector_search_seconds_count") == 1
    client = aioredis.Redis.from_url(settings.redis_url or "")
    report = json.loads(await client.get(WORKER_REPORT_KEY) or b"{}")
    await client.aclose()
    assert report["database"]["ok"] is True
