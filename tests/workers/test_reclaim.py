"""Jobs left in progress by a worker whose heartbeat stopped are freed for the others."""

from __future__ import annotations

from arq.connections import ArqRedis

from app.jobs import IN_PROGRESS_KEY_PREFIX, job_owner_key, worker_heartbeat_key
from workers.report import claim, reclaim_orphans, release


async def test_only_the_jobs_of_workers_without_a_heartbeat_are_freed(redis_url: str) -> None:
    redis = ArqRedis.from_url(redis_url)
    try:
        for job in ("dead-job", "live-job", "unowned-job"):
            await redis.set(IN_PROGRESS_KEY_PREFIX + job, b"1", px=600_000)
        await redis.set(worker_heartbeat_key("live:2:bbbbbb"), b"{}", ex=15)
        await claim(redis, "dead-job", "gone:1:aaaaaa", 900)
        await claim(redis, "live-job", "live:2:bbbbbb", 900)

        assert await reclaim_orphans(redis) == ["dead-job"]
        assert not await redis.exists(IN_PROGRESS_KEY_PREFIX + "dead-job")
        assert not await redis.exists(job_owner_key("dead-job"))
        # A live worker's job and a job nobody claimed (an older worker's) are left alone.
        assert await redis.exists(IN_PROGRESS_KEY_PREFIX + "live-job")
        assert await redis.exists(IN_PROGRESS_KEY_PREFIX + "unowned-job")
        assert await reclaim_orphans(redis) == []

        await release(redis, "live-job")
        assert not await redis.exists(job_owner_key("live-job"))
    finally:
        await redis.aclose()
