"""What a worker writes for /health every few seconds: its report and its own heartbeat."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from typing import Any

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from app.commands.resources import Resources
from app.jobs import WORKER_HEARTBEAT_TTL, WORKER_REPORT_KEY, worker_heartbeat_key
from health import disk_percent
from workers.metrics import WorkerMetrics

logger = logging.getLogger(__name__)


async def report(ctx: dict[str, Any]) -> None:
    """Write what /health needs from the worker: its database, its index and its disk,
    and this worker's own heartbeat (who it is, since when, what it runs)."""
    resources: Resources = ctx["resources"]
    redis: ArqRedis = ctx["redis"]
    metrics: WorkerMetrics = ctx["metrics"]
    started = time.perf_counter()
    try:
        async with asyncio.timeout(1.0):
            await resources.state.store.database.fetch_val("SELECT 1")
        database: dict[str, Any] = {
            "ok": True,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }
    except Exception as exc:
        logger.exception("the database did not answer")
        database = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    metrics.database_seconds.labels("ping").observe(time.perf_counter() - started)
    try:
        async with asyncio.timeout(1.0):
            index = await resources.state.check_index()
    except TimeoutError:
        index = {"ok": False, "error": "the index did not answer within 1 s"}
    except Exception as exc:
        logger.exception("the index check failed")
        index = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    report = {
        "database": database,
        "index": index,
        "disk_percent": await asyncio.to_thread(disk_percent, resources.settings.data_dir),
    }
    heartbeat = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": round(ctx["started_at"]),
        "generators": ctx["generators"],
        "running": sum(
            len([t for t in w.tasks.values() if not t.done()])
            for w in (ctx.get("main_worker"), ctx.get("answer_worker"))
            if w is not None
        ),
    }
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(WORKER_REPORT_KEY, json.dumps(report), ex=WORKER_HEARTBEAT_TTL)
        pipe.set(
            worker_heartbeat_key(ctx["worker_id"]),
            json.dumps({**heartbeat, **report}),
            ex=WORKER_HEARTBEAT_TTL,
        )
        await pipe.execute()


async def report_every(ctx: dict[str, Any], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await report(ctx)
        except (RedisError, OSError) as exc:
            logger.warning("could not write the worker's health report: %s", exc)
