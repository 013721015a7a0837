"""Handing a command-line command's work to the workers, wherever they run.

Whenever a worker runs (its heartbeat is in Redis, see `app.jobs`), the command line queues
its work for the workers instead of opening the state beside them; a worker that holds the
local state lock is found by the lock as well.
"""

from __future__ import annotations

import asyncio
import sys

from app.errors import UsageError
from app.settings import Settings

# How long the command line waits for Redis to say whether workers run.
_LOOKUP_TIMEOUT = 3.0


def queue_url(settings: Settings) -> str | None:
    """REDIS_URL, or the all-in-one mode's private Redis when it is running."""
    from app.cli.supervisor import embedded_redis_socket

    socket = embedded_redis_socket(settings)
    if settings.redis_url is None and socket.exists():
        return f"unix://{socket.resolve()}?db=0"
    return settings.redis_url


async def live_workers(settings: Settings) -> list[str]:
    """The ids of the workers whose heartbeat is fresh; none when Redis is unknown or down."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from app.jobs import WORKER_HEARTBEAT_PREFIX

    url = queue_url(settings)
    if url is None:
        return []
    redis = Redis.from_url(url)
    try:
        async with asyncio.timeout(_LOOKUP_TIMEOUT):
            keys = [key async for key in redis.scan_iter(match=WORKER_HEARTBEAT_PREFIX + "*")]
    except (RedisError, OSError, TimeoutError):
        return []
    finally:
        await redis.aclose()
    return sorted(k.decode().removeprefix(WORKER_HEARTBEAT_PREFIX) for k in keys)


async def workers_running(settings: Settings) -> str | None:
    """Why the work goes to the workers ("2 workers run: ..."), or None when none runs."""
    workers = await live_workers(settings)
    if not workers:
        return None
    shown = ", ".join(workers[:3]) + (", …" if len(workers) > 3 else "")
    return f"{len(workers)} worker{'s' if len(workers) > 1 else ''} running ({shown})"


async def run_on_worker(settings: Settings, reason: object, job_name: str, *args: object) -> str:
    """Queue `job_name` for the workers and wait for its result; `reason` says why."""
    from arq.connections import ArqRedis

    from app.errors import StateLockedError
    from app.jobs import QUEUE_NAME

    url = queue_url(settings)
    if url is None:
        raise StateLockedError(f"{reason}: the worker's queue is unknown (set REDIS_URL)")
    redis = ArqRedis.from_url(url)
    try:
        job = await redis.enqueue_job(job_name, *args, _queue_name=QUEUE_NAME)
        if job is None:
            raise UsageError("the worker's queue refused the job")
        print(f"{reason}; the work was handed to it. Waiting for the result…", file=sys.stderr)
        result: str = await job.result(timeout=None, poll_delay=0.5)
        return result
    finally:
        await redis.aclose()
