"""What a worker does every few seconds: its report for /health, its own heartbeat, and
freeing the jobs that a worker which stopped beating left in progress.

arq marks a started job in progress until its timeout (minutes for an answer), so a job
whose worker was killed would wait that long. Each worker names itself as the owner of the
job it runs (`app.jobs.job_owner_key`); when the owner's heartbeat has expired, any live
worker deletes the mark and the job is taken again at once, by whichever worker is free.
"""

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
from app.jobs import (
    IN_PROGRESS_KEY_PREFIX,
    WORKER_HEARTBEAT_TTL,
    WORKER_REPORT_KEY,
    job_owner_key,
    worker_heartbeat_key,
)
from health import disk_percent
from workers.metrics import WorkerMetrics

logger = logging.getLogger(__name__)

# KEYS: in-progress mark, owner key, the owner's heartbeat. ARGV: the owner read before.
# Frees the job only if the same owner still holds it and its heartbeat is gone.
_RECLAIM = """
if redis.call('GET', KEYS[2]) == ARGV[1] and redis.call('EXISTS', KEYS[3]) == 0 then
  return redis.call('DEL', KEYS[1], KEYS[2])
end
return 0
"""


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


async def claim(redis: ArqRedis, job_id: str, worker_id: str, ttl: int) -> None:
    """Name `worker_id` as the worker running job `job_id`."""
    await redis.set(job_owner_key(job_id), worker_id, ex=ttl)


async def release(redis: ArqRedis, job_id: str) -> None:
    """The job is over (done, failed or cancelled): it has no owner any more."""
    await redis.delete(job_owner_key(job_id))


async def reclaim_orphans(redis: ArqRedis) -> list[str]:
    """Free the jobs in progress whose worker's heartbeat has expired; return their ids."""
    freed = []
    script = redis.register_script(_RECLAIM)
    async for key in redis.scan_iter(match=IN_PROGRESS_KEY_PREFIX + "*", count=500):
        job_id = (key.decode() if isinstance(key, bytes) else str(key)).removeprefix(
            IN_PROGRESS_KEY_PREFIX
        )
        owner = await redis.get(job_owner_key(job_id))
        if owner is None:
            continue
        owner_id = owner.decode() if isinstance(owner, bytes) else str(owner)
        keys = [key, job_owner_key(job_id), worker_heartbeat_key(owner_id)]
        if await script(keys=keys, args=[owner_id]):
            logger.warning("job %s was left in progress by stopped worker %s", job_id, owner_id)
            freed.append(job_id)
    return freed


async def report_every(ctx: dict[str, Any], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await report(ctx)
            await reclaim_orphans(ctx["redis"])
        except (RedisError, OSError) as exc:
            logger.warning("could not write the worker's health report: %s", exc)
