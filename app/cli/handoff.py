"""Handing a command-line command's work to the running worker that owns the state."""

from __future__ import annotations

import sys

from app.errors import StateLockedError, UsageError
from app.settings import Settings


def queue_url(settings: Settings) -> str | None:
    """REDIS_URL, or the all-in-one mode's private Redis when it is running."""
    from app.cli.supervisor import embedded_redis_socket

    socket = embedded_redis_socket(settings)
    if settings.redis_url is None and socket.exists():
        return f"unix://{socket.resolve()}?db=0"
    return settings.redis_url


async def run_on_worker(
    settings: Settings, locked: StateLockedError, job_name: str, *args: object
) -> str:
    """Queue `job_name` for the worker that holds the state lock and wait for its result."""
    from arq.connections import ArqRedis

    from app.jobs import QUEUE_NAME

    url = queue_url(settings)
    if url is None:
        raise StateLockedError(f"{locked}: the worker's queue is unknown (set REDIS_URL)")
    redis = ArqRedis.from_url(url)
    try:
        job = await redis.enqueue_job(job_name, *args, _queue_name=QUEUE_NAME)
        if job is None:
            raise UsageError("the worker's queue refused the job")
        print(f"{locked}; the work was handed to it. Waiting for the result…", file=sys.stderr)
        result: str = await job.result(timeout=None, poll_delay=0.5)
        return result
    finally:
        await redis.aclose()
