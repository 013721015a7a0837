"""Metrics: counted after real requests, in Prometheus format, summed per minute in Redis."""

from __future__ import annotations

import logging
import time

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.jobs import STATS_KEY_PREFIX
from app.ops.windows import MinuteWindow, histogram_counts
from app.settings import Settings
from app.web.application import create_app
from app.web.metrics import RESPONSE_BUCKETS, LoopCounter, LoopHistogram
from tests.signing import Signer, command, encode
from workers.metrics import WorkerMetrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_front_door_requests_are_counted(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The interaction counter listens to the endpoint's per-request INFO event.
    caplog.set_level(logging.INFO, logger="app.interactions.endpoint")
    signer = Signer()
    registry = CollectorRegistry()
    settings = Settings.from_env(
        {"REDIS_URL": redis_url, "DISCORD_PUBLIC_KEY": signer.public_key_hex}
    )
    app = create_app(settings, registry=registry)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        for i in range(3):
            body = encode(command("stats", interaction_id=str(1100000000000000001 + i)))
            response = await http.post("/interactions", content=body, headers=signer.headers(body))
            assert response.json()["type"] == 5
        ping = encode({"type": 1, "id": "1", "application_id": "1", "token": "t", "version": 1})
        await http.post("/interactions", content=ping, headers=signer.headers(ping))
        await http.post("/interactions", content=ping, headers={"X-Signature-Ed25519": "00"})
        page = await http.get("/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    found = samples(page.text)
    queued = ("interactions_total", (("command", "stats"), ("outcome", "queued"), ("type", "2")))
    assert found[queued] == 3
    pong = ("interactions_total", (("command", "none"), ("outcome", "pong"), ("type", "1")))
    assert found[pong] == 1
    bad = (
        "interactions_total",
        (("command", "none"), ("outcome", "unauthorized"), ("type", "none")),
    )
    assert found[bad] == 1
    assert found[("interaction_response_seconds_count", ())] == 5
    # The lifespan's last flush wrote the minute's totals for /health.
    client = aioredis.Redis.from_url(redis_url)
    requests, errors, buckets = await MinuteWindow(client).totals("web", 2)
    keys = [k async for k in client.scan_iter(match=STATS_KEY_PREFIX + "web:*")]
    await client.aclose()
    assert keys
    assert (requests, errors, sum(buckets)) == (5, 0, 5)


async def test_the_worker_metrics_feed_the_job_window(redis_url: str) -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    metrics.job_done("handle_interaction", "ok", 0.2)
    metrics.job_done("handle_interaction", "error", 7.0)
    metrics.job_done("run_sync", "ok", 100.0)
    requests, errors, buckets = metrics.interaction_snapshot("handle_interaction")
    assert (requests, errors) == (2, 1)
    assert buckets[3] == 1  # 0.1 < 0.2 <= 0.25
    assert buckets[8] == 1  # 5 < 7 <= 10
    assert sum(histogram_counts(metrics.job_seconds, {})) == 3
    metrics.request_done("GET /channels/{channel_id}/messages", 200, 0.05)
    metrics.rate_limit_wait("GET /channels/{channel_id}/messages", 1.5)
    metrics.synced(new=10, edited=1, deleted=0)
    metrics.generation_done(prompt_tokens=100, tokens=20, tokens_per_second=40.0)
    assert (
        metrics.discord_requests.labels("GET /channels/{channel_id}/messages", "200")._value.get()
        == 1
    )
    assert metrics.messages_synced.labels("new")._value.get() == 10


def test_a_fresh_registry_per_app_keeps_apps_apart(redis_url: str) -> None:
    settings = Settings.from_env({"REDIS_URL": redis_url})
    create_app(settings)
    create_app(settings)  # a module-level registry would refuse the second


async def test_minute_window_expires_and_sums(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    window = MinuteWindow(client)
    now = time.time()
    await window.add("web", 2, 1, [2] + [0] * 12, now)
    await window.add("web", 3, 0, [0, 3] + [0] * 11, now)
    assert await window.totals("web", 1) == (5, 1, [2, 3] + [0] * 11)
    key = f"{STATS_KEY_PREFIX}web:{int(now // 60)}"
    assert 0 < await client.ttl(key) <= 900
    await client.aclose()


def _without_created(text: str) -> list[str]:
    # prometheus_client also writes when each series was created; the loop metrics do not.
    return [line for line in text.splitlines() if "_created" not in line]


def test_loop_metrics_write_what_prometheus_client_writes() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histogram = LoopHistogram("latency_seconds", "How long", RESPONSE_BUCKETS)
    counter = LoopCounter("answers", "Answers", ["kind", "outcome"])
    ours.register(histogram)
    ours.register(counter)
    reference = Histogram("latency_seconds", "How long", buckets=RESPONSE_BUCKETS, registry=theirs)
    answers = Counter("answers", "Answers", ["kind", "outcome"], registry=theirs)
    # On a bound, between bounds, past the last one, and zero.
    for value in (0.0, 0.001, 0.0011, 0.3, RESPONSE_BUCKETS[-1], 99.0, 1e9):
        histogram.observe(value)
        reference.observe(value)
    for labels in (("1", "pong"), ("2", "queued"), ("2", "queued")):
        counter.inc(labels)
        answers.labels(*labels).inc()
    assert _without_created(generate_latest(ours).decode()) == _without_created(
        generate_latest(theirs).decode()
    )


def test_a_loop_counter_keeps_a_bounded_set_of_label_combinations() -> None:
    counter = LoopCounter("answers", "Answers", ["outcome"])
    for index in range(1000):
        counter.inc((f"outcome-{index}",))
    assert len(counter.values) <= 257
    assert sum(counter.values.values()) == 1000
    assert counter.values[("other",)] == 1000 - 256
