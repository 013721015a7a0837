"""GET /health, /health/live and /health/ready: each failing check, against a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from app.cli.redis_server import RedisServer
from app.jobs import (
    ANSWER_QUEUE_NAME,
    INTEGRITY_KEY,
    QUEUE_NAME,
    WORKER_HEARTBEAT_TTL,
    WORKER_REPORT_KEY,
    worker_heartbeat_key,
)
from app.ops.windows import MinuteWindow, percentile
from app.settings import Settings
from app.web.application import create_app
from health import HealthChecker, Thresholds


def checker(
    tmp_path: Path, *, memory: float = 10.0, disk: float = 10.0, **limits: Any
) -> Callable[[aioredis.Redis], HealthChecker]:
    def make(client: aioredis.Redis) -> HealthChecker:
        return HealthChecker(
            client,
            tmp_path,
            Thresholds(**limits),
            memory=lambda: memory,
            disk=lambda path: disk,
        )

    return make


async def heartbeat(client: aioredis.Redis, worker_id: str, age: float = 0.0) -> None:
    """A worker's heartbeat written `age` seconds ago."""
    info = json.dumps({"host": "h", "pid": 1, "generators": 1, "running": 0})
    await client.psetex(
        worker_heartbeat_key(worker_id), round((WORKER_HEARTBEAT_TTL - age) * 1000), info
    )


async def healthy_worker(url: str) -> None:
    """What a running worker leaves in Redis: a fresh heartbeat and its report."""
    client = aioredis.Redis.from_url(url)
    await heartbeat(client, "h:1:aaaaaa")
    report = {"database": {"ok": True, "latency_ms": 0.1}, "disk_percent": 12.0}
    await client.set(WORKER_REPORT_KEY, json.dumps(report))
    await client.aclose()


def get(
    url: str, factory: Callable[[aioredis.Redis], HealthChecker], path: str
) -> tuple[int, dict]:  # type: ignore[type-arg]
    app = create_app(Settings.from_env({"REDIS_URL": url}), health_checker=factory)
    with TestClient(app) as client:
        response = client.get(path)
    return response.status_code, response.json()


async def test_all_checks_pass_with_a_healthy_worker(redis_url: str, tmp_path: Path) -> None:
    await healthy_worker(redis_url)
    status, body = get(redis_url, checker(tmp_path), "/health")
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert set(body["checks"]) == {
        "redis",
        "memory",
        "disk",
        "worker",
        "queue",
        "errors",
        "latency",
        "database",
        "integrity",
        "worker_disk",
    }


async def test_memory_over_the_threshold_answers_503(redis_url: str, tmp_path: Path) -> None:
    await healthy_worker(redis_url)
    status, body = get(redis_url, checker(tmp_path, memory=85.0), "/health")
    assert status == 503
    assert body["failing"] == ["memory"]
    assert body["checks"]["memory"] == {"ok": False, "percent": 85.0, "limit": 80.0}
    status, ready = get(redis_url, checker(tmp_path, memory=85.0), "/health/ready")
    assert status == 503 and ready["checks"]["memory"]["ok"] is False


async def test_disk_over_the_threshold_is_degraded_not_down(redis_url: str, tmp_path: Path) -> None:
    await healthy_worker(redis_url)
    status, body = get(redis_url, checker(tmp_path, disk=95.0, disk_percent=90.0), "/health")
    assert status == 200
    assert body["status"] == "degraded"
    assert body["failing"] == ["disk"]
    status, _ = get(redis_url, checker(tmp_path, disk=95.0), "/health/ready")
    assert status == 200


async def test_the_worker_disk_is_checked_from_its_report(redis_url: str, tmp_path: Path) -> None:
    client = aioredis.Redis.from_url(redis_url)
    await heartbeat(client, "h:1:aaaaaa")
    await client.set(WORKER_REPORT_KEY, json.dumps({"database": {"ok": True}, "disk_percent": 93}))
    await client.aclose()
    _, body = get(redis_url, checker(tmp_path), "/health")
    assert body["failing"] == ["worker_disk"]


def test_redis_stopped_answers_503(own_redis: RedisServer, tmp_path: Path) -> None:
    app = create_app(
        Settings.from_env({"REDIS_URL": own_redis.url}), health_checker=checker(tmp_path)
    )
    with TestClient(app) as client:
        own_redis.stop()
        started = time.monotonic()
        response = client.get("/health")
        assert time.monotonic() - started < 3.0
        assert response.status_code == 503
        body = response.json()
        assert body["checks"]["redis"]["ok"] is False
        assert "redis" in body["failing"]
        assert client.get("/health/ready").status_code == 503
        assert client.get("/health/live").status_code == 200


async def test_a_missing_heartbeat_is_reported(redis_url: str, tmp_path: Path) -> None:
    status, body = get(redis_url, checker(tmp_path), "/health")
    assert status == 200
    assert "worker" in body["failing"]
    assert "is the worker running" in body["checks"]["worker"]["error"]
    assert "database" in body["failing"]


async def test_a_stale_heartbeat_is_reported(redis_url: str, tmp_path: Path) -> None:
    await healthy_worker(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    # Written 4 s ago: its remaining life is the key's life less those 4 s.
    await heartbeat(client, "h:1:aaaaaa", age=4.0)
    await client.aclose()
    status, body = get(redis_url, checker(tmp_path, heartbeat_max_age=2.0), "/health")
    assert status == 200
    assert body["failing"] == ["worker"]
    assert body["checks"]["worker"]["age_s"] == pytest.approx(4.0, abs=0.5)


async def test_each_worker_is_listed_with_its_age(redis_url: str, tmp_path: Path) -> None:
    await healthy_worker(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    await heartbeat(client, "h:1:aaaaaa", age=1.0)
    await heartbeat(client, "g:7:bbbbbb", age=9.0)
    await client.aclose()
    _, body = get(redis_url, checker(tmp_path), "/health")
    worker = body["checks"]["worker"]
    assert worker["ok"] is True, worker
    assert worker["alive"] == 1
    listed = {w["id"]: w for w in worker["workers"]}
    assert listed["h:1:aaaaaa"]["ok"] is True
    assert listed["h:1:aaaaaa"]["age_s"] == pytest.approx(1.0, abs=0.5)
    assert listed["g:7:bbbbbb"]["ok"] is False
    assert listed["g:7:bbbbbb"]["age_s"] == pytest.approx(9.0, abs=0.5)


async def test_the_answer_queue_counts_in_the_depth(redis_url: str, tmp_path: Path) -> None:
    await healthy_worker(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    now_ms = time.time() * 1000
    await client.zadd(QUEUE_NAME, {"job1": now_ms - 5_000})
    await client.zadd(ANSWER_QUEUE_NAME, {f"ask{i}": now_ms - 20_000 for i in range(3)})
    await client.aclose()
    _, body = get(redis_url, checker(tmp_path, queue_depth=3), "/health")
    assert body["checks"]["queue"]["depth"] == 4
    assert body["checks"]["queue"]["oldest_s"] == pytest.approx(20.0, abs=2.0)


async def test_a_deep_queue_is_reported(redis_url: str, tmp_path: Path) -> None:
    await healthy_worker(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    now_ms = time.time() * 1000
    await client.zadd(QUEUE_NAME, {f"job{i}": now_ms - 30_000 for i in range(4)})
    await client.aclose()
    _, body = get(redis_url, checker(tmp_path, queue_depth=3), "/health")
    assert body["failing"] == ["queue"]
    assert body["checks"]["queue"]["depth"] == 4
    assert body["checks"]["queue"]["oldest_s"] >= 29


async def test_error_rate_and_p95_over_the_window(redis_url: str, tmp_path: Path) -> None:
    await healthy_worker(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    window = MinuteWindow(client)
    now = time.time()
    buckets = [0] * 13
    buckets[0] = 90  # under 10 ms
    buckets[9] = 10  # 10 to 30 s: beyond the 95th percentile's limit
    await window.add("web", 100, 3, buckets, now - 120)
    await window.add("jobs", 20, 4, [20] + [0] * 12, now)
    # Outside the 5-minute window: ignored.
    await window.add("web", 1000, 1000, [1000] + [0] * 12, now - 600)
    await client.aclose()
    _, body = get(redis_url, checker(tmp_path), "/health")
    assert sorted(body["failing"]) == ["errors", "latency"]
    assert body["checks"]["errors"]["rate"] == pytest.approx(7 / 120, abs=1e-3)
    assert body["checks"]["latency"]["p95_s"] == 30.0


def test_percentile_reads_bucket_bounds() -> None:
    assert percentile([0] * 13, 0.95) == 0.0
    assert percentile([95, 5] + [0] * 11, 0.95) == 0.01
    assert percentile([94, 6] + [0] * 11, 0.95) == 0.05
    assert percentile([0] * 12 + [1], 0.95) == float("inf")


async def test_a_failed_integrity_check_is_reported(redis_url: str, tmp_path: Path) -> None:
    await healthy_worker(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    failed = {"ok": False, "error": "database: row 3 missing from index", "hint": "restore"}
    await client.set(INTEGRITY_KEY, json.dumps(failed))
    await client.aclose()
    status, body = get(redis_url, checker(tmp_path), "/health")
    assert status == 200
    assert body["failing"] == ["integrity"]
    assert body["checks"]["integrity"]["hint"] == "restore"


def test_live_answers_without_any_check(redis_url: str, tmp_path: Path) -> None:
    status, body = get(redis_url, checker(tmp_path, memory=99.0), "/health/live")
    assert status == 200 and body == {"status": "ok"}
