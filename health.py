"""Health checks: what GET /health reports, and a probe for container health checks.

The web process checks what it can see itself (Redis, its memory, its disk) and
reads what only the worker can see (its heartbeat, the database, the integrity
check, the index) from Redis, where the worker writes it. Web and worker keep
per-minute request counters in Redis (`app.ops.windows`), so the error rate and
the 95th percentile response time cover every process over the last minutes.

A failing *critical* check (Redis, memory) means this instance cannot take
interactions: 503. Any other failing check makes the status "degraded" with 200.

`python -m health [URL]` exits 0 when the process answers: the image's HEALTHCHECK.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.jobs import (
    HEARTBEAT_INTERVAL,
    INTEGRITY_KEY,
    QUEUE_NAMES,
    WORKER_HEARTBEAT_PREFIX,
    WORKER_HEARTBEAT_TTL,
    WORKER_REPORT_KEY,
)
from app.ops.windows import LATENCY_BUCKETS, MinuteWindow, percentile

_ERROR_TEXT_MAX: Final = 200

Check = dict[str, Any]
# Without these this instance cannot take interactions: GET /health answers 503.
CRITICAL: Final = frozenset({"redis", "memory"})


@dataclass(frozen=True)
class Thresholds:
    """Limits above which a check fails; tests inject their own."""

    memory_percent: float = 80.0
    disk_percent: float = 90.0
    heartbeat_max_age: float = HEARTBEAT_INTERVAL + 1.0
    queue_depth: int = 100
    error_rate: float = 0.05
    p95_seconds: float = 5.0
    window_minutes: int = 5
    # Fewer requests than this in the window say nothing about the error rate.
    min_requests: int = 20
    check_timeout: float = 1.0


@dataclass(frozen=True)
class HealthReport:
    """The outcome of one round of checks."""

    checks: dict[str, Check]
    critical: frozenset[str] = field(default_factory=frozenset)

    @property
    def serving(self) -> bool:
        """Whether every critical check passed: this instance can take interactions."""
        return all(self.checks[name]["ok"] for name in self.critical if name in self.checks)

    @property
    def status(self) -> str:
        """ "ok" when every check passed, else "degraded"."""
        return "ok" if all(c["ok"] for c in self.checks.values()) else "degraded"

    def body(self) -> dict[str, Any]:
        """The JSON body of GET /health."""
        return {"status": self.status, "checks": self.checks}


def memory_percent() -> float:
    """Memory in use, in percent of this container's limit (cgroup v2) or of the machine."""
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            current = int((cgroup / "memory.current").read_text())
            return 100.0 * current / int(limit)
    except (OSError, ValueError):
        pass
    import psutil

    return float(psutil.virtual_memory().percent)


def disk_percent(path: Path) -> float:
    """Disk use of the file system holding `path` (or its nearest existing parent)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return 100.0 * usage.used / usage.total


class HealthChecker:
    """Runs the checks of GET /health, each bounded by `thresholds.check_timeout`."""

    def __init__(
        self,
        redis: Redis,
        data_dir: Path,
        thresholds: Thresholds | None = None,
        *,
        memory: Callable[[], float] = memory_percent,
        disk: Callable[[Path], float] = disk_percent,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._data_dir = data_dir
        self.thresholds = thresholds or Thresholds()
        self._memory = memory
        self._disk = disk
        self._clock = clock
        self._window = MinuteWindow(redis, clock)

    async def run(self) -> HealthReport:
        """Every check, concurrently; the worker's are skipped while Redis is down."""
        redis = await self._bounded(self.redis)
        checks: dict[str, Check] = {
            "redis": redis,
            "memory": await self._bounded(self.memory),
            "disk": await self._bounded(self.disk),
        }
        if redis["ok"]:
            names = (
                "worker",
                "queue",
                "errors",
                "latency",
                "database",
                "integrity",
                "worker_disk",
            )
            results = await asyncio.gather(
                self._bounded(self.worker),
                self._bounded(self.queue),
                self._bounded(self.errors),
                self._bounded(self.latency),
                self._bounded(self.database),
                self._bounded(self.integrity),
                self._bounded(self.worker_disk),
            )
            checks.update(zip(names, results, strict=True))
        return HealthReport(checks, CRITICAL)

    async def run_critical(self) -> HealthReport:
        """Only the checks that decide whether this instance can take interactions."""
        checks = {
            "redis": await self._bounded(self.redis),
            "memory": await self._bounded(self.memory),
        }
        return HealthReport(checks, frozenset(checks))

    async def _bounded(self, check: Callable[[], Awaitable[Check]]) -> Check:
        try:
            async with asyncio.timeout(self.thresholds.check_timeout):
                return await check()
        except TimeoutError:
            return {"ok": False, "error": f"no answer within {self.thresholds.check_timeout} s"}
        except (RedisError, OSError, ValueError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT_MAX]}

    async def redis(self) -> Check:
        """Redis answers a PING."""
        started = time.perf_counter()
        await self._redis.ping()
        return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}

    async def memory(self) -> Check:
        """This machine's (or container's) memory use is under the threshold."""
        used = self._memory()
        limit = self.thresholds.memory_percent
        return {"ok": used < limit, "percent": round(used, 1), "limit": limit}

    async def disk(self) -> Check:
        """The disk holding DATA_DIR on this machine is under the threshold."""
        used = self._disk(self._data_dir)
        limit = self.thresholds.disk_percent
        return {"ok": used < limit, "percent": round(used, 1), "limit": limit}

    async def worker_disk(self) -> Check:
        """The disk holding the worker's DATA_DIR, as it last reported, is under the threshold."""
        used = (await self._worker_report()).get("disk_percent")
        if not isinstance(used, (int, float)):
            return {"ok": False, "error": "the worker has not reported its disk use"}
        limit = self.thresholds.disk_percent
        return {"ok": used < limit, "percent": round(float(used), 1), "limit": limit}

    async def worker(self) -> Check:
        """Every worker's own heartbeat, each with its age: ok while one of them is fresh.

        Ages come from the keys' remaining lives, not from clocks, so workers on other
        machines are judged alike whatever their clocks say.
        """
        keys = [k async for k in self._redis.scan_iter(match=WORKER_HEARTBEAT_PREFIX + "*")]
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.pttl(key)
        replies = await pipe.execute() if keys else []
        limit = self.thresholds.heartbeat_max_age
        workers = []
        for key, value, ttl_ms in zip(keys, replies[::2], replies[1::2], strict=True):
            if value is None:  # expired between the scan and the read
                continue
            info = json.loads(value)
            age = WORKER_HEARTBEAT_TTL - max(0, ttl_ms) / 1000.0
            workers.append(
                {
                    "id": key.decode().removeprefix(WORKER_HEARTBEAT_PREFIX),
                    "ok": age <= limit,
                    "age_s": round(age, 1),
                    "running": info.get("running"),
                    "generators": info.get("generators"),
                }
            )
        if not workers:
            return {"ok": False, "error": "no worker heartbeat: is the worker running?"}
        workers.sort(key=lambda w: (w["age_s"], w["id"]))
        alive = sum(1 for w in workers if w["ok"])
        return {
            "ok": alive > 0,
            "alive": alive,
            "age_s": workers[0]["age_s"],
            "limit_s": limit,
            "workers": workers,
        }

    async def queue(self) -> Check:
        """Jobs waiting in the queues (general and answers), and how long the oldest waited."""
        pipe = self._redis.pipeline(transaction=False)
        for name in QUEUE_NAMES:
            pipe.zcard(name)
            pipe.zrange(name, 0, 0, withscores=True)
        replies = await pipe.execute()
        depth = sum(replies[::2])
        oldest = [entries[0][1] for entries in replies[1::2] if entries]
        wait = max(0.0, self._clock() - min(oldest) / 1000.0) if oldest else 0.0
        limit = self.thresholds.queue_depth
        return {"ok": depth <= limit, "depth": depth, "limit": limit, "oldest_s": round(wait, 1)}

    async def errors(self) -> Check:
        """Failed requests and jobs over the window are under the threshold rate."""
        minutes = self.thresholds.window_minutes
        web = await self._window.totals("web", minutes)
        jobs = await self._window.totals("jobs", minutes)
        requests, failed = web[0] + jobs[0], web[1] + jobs[1]
        rate = failed / requests if requests else 0.0
        limit = self.thresholds.error_rate
        ok = requests < self.thresholds.min_requests or rate < limit
        return {"ok": ok, "rate": round(rate, 4), "limit": limit, "requests": requests}

    async def latency(self) -> Check:
        """The 95th percentile of the front door's response time is under the threshold."""
        minutes = self.thresholds.window_minutes
        requests, _, buckets = await self._window.totals("web", minutes)
        _, _, job_buckets = await self._window.totals("jobs", minutes)
        p95 = percentile(buckets, 0.95)
        limit = self.thresholds.p95_seconds
        return {
            "ok": p95 <= limit,
            "p95_s": p95 if p95 != float("inf") else f">{LATENCY_BUCKETS[-1]}",
            "limit_s": limit,
            "requests": requests,
            "jobs_p95_s": _finite(percentile(job_buckets, 0.95)),
        }

    async def database(self) -> Check:
        """The worker reached its database at its last report."""
        report = await self._worker_report()
        database = report.get("database")
        if not isinstance(database, dict):
            return {"ok": False, "error": "the worker has not reported on its database"}
        return database

    async def integrity(self) -> Check:
        """The latest integrity check of the database and the index found no damage, and
        the worker's last look at the index (in its report) found it whole."""
        raw = await self._redis.get(INTEGRITY_KEY)
        result: Check = json.loads(raw) if raw is not None else {"ok": True, "checked_at": None}
        index = (await self._worker_report()).get("index")
        if isinstance(index, dict) and not index.get("ok", False) and result["ok"]:
            return {**index, "ok": False, "checked_at": result.get("checked_at")}
        return result

    async def _worker_report(self) -> Mapping[str, Any]:
        raw = await self._redis.get(WORKER_REPORT_KEY)
        report: dict[str, Any] = json.loads(raw) if raw else {}
        return report


def _finite(value: float) -> float | str:
    return value if value != float("inf") else f">{LATENCY_BUCKETS[-1]}"


def probe(url: str, timeout: float = 3.0) -> int:
    """Exit status for a container health check: 0 when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our URL
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m health [URL]`: probe this container's web /health, or its worker's metrics."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        return probe(args[0])
    web = f"http://127.0.0.1:{os.environ.get('PORT', '8080')}/health"
    worker = f"http://127.0.0.1:{os.environ.get('METRICS_PORT', '9091')}/metrics"
    # The image runs either process; whichever answers is this container's.
    return 0 if probe(web) == 0 else probe(worker)


if __name__ == "__main__":
    raise SystemExit(main())
