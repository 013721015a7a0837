from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis
from arq.constants import expires_extra_ms
from arq.jobs import Job, deserialize_job_raw
from arq.worker import Worker

from app.cli.redis_server import RedisServer
from app.interactions.admission import (
    Admission,
    AdmissionUnavailable,
    Outcome,
)
from app.jobs import (
    HANDLE_INTERACTION,
    JOB_KEY_PREFIX,
    QUEUE_NAME,
    RATE_KEY_PREFIX,
    RESULT_KEY_PREFIX,
)
from tests.signing import command


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


MakeAdmission = Callable[..., Admission]


@pytest.fixture
async def admission() -> AsyncIterator[MakeAdmission]:
    """Builds admissions on a given client and closes their connections afterwards."""
    made: list[Admission] = []

    def make(
        redis: aioredis.Redis, limit: int = 5, timeout: float = 1.0, queue_limit: int = 0
    ) -> Admission:
        gate = Admission(
            redis,
            rate_limit_per_minute=limit,
            timeout=timeout,
            clock=time.time,
            queue_limit=queue_limit,
        )
        made.append(gate)
        return gate

    yield make
    for gate in made:
        await gate.aclose()


async def handle_interaction(ctx: dict[str, Any], interaction: dict[str, Any]) -> dict[str, Any]:
    """Stands in for the worker's job: hands its argument back as the job result."""
    return interaction


async def test_a_job_is_written_exactly_as_arq_enqueue_job_writes_it(
    redis: aioredis.Redis, admission: MakeAdmission
) -> None:
    raw = command("ask", {"question": "what changed?"}, interaction_id="901")
    verdict = await admission(redis).admit(raw, "901", "u1")
    assert verdict.outcome is Outcome.QUEUED

    arq_redis = ArqRedis(connection_pool=redis.connection_pool)
    await arq_redis.enqueue_job(HANDLE_INTERACTION, raw, _job_id="902", _job_try=1)

    ours = await redis.get(JOB_KEY_PREFIX + "901")
    theirs = await redis.get(JOB_KEY_PREFIX + "902")
    assert ours is not None
    assert theirs is not None
    ours_fields = deserialize_job_raw(ours)
    theirs_fields = deserialize_job_raw(theirs)
    assert ours_fields[:4] == theirs_fields[:4] == (HANDLE_INTERACTION, (raw,), {}, 1)
    # Same bytes once the enqueue time is the same: the pickled layout matches.
    assert pickle.loads(ours) | {"et": 0} == pickle.loads(theirs) | {"et": 0}
    for job_id, fields in (("901", ours_fields), ("902", theirs_fields)):
        assert await redis.zscore(QUEUE_NAME, job_id) == fields[4]
        ttl = await redis.pttl(JOB_KEY_PREFIX + job_id)
        assert expires_extra_ms - 5_000 < ttl <= expires_extra_ms


async def test_a_real_arq_worker_runs_the_job_with_the_interaction(
    redis: aioredis.Redis, admission: MakeAdmission
) -> None:
    raw = command("summarize", {"count": 20}, interaction_id="903")
    assert (await admission(redis).admit(raw, "903", "u1")).outcome is Outcome.QUEUED
    pool = ArqRedis(connection_pool=redis.connection_pool)
    worker = Worker(
        functions=[handle_interaction],
        redis_pool=pool,
        burst=True,
        poll_delay=0,
        handle_signals=False,
    )
    # Not worker.close(): it would close the test's own pool with a deprecated call.
    await worker.main()
    assert worker.jobs_complete == 1
    assert worker.jobs_failed == 0
    info = await Job("903", pool).result_info()
    assert info is not None
    assert info.function == HANDLE_INTERACTION
    assert info.args == (raw,)
    assert info.result == raw
    # Once run, the id is still refused: the result key marks it as handled.
    again = await admission(redis).admit(raw, "903", "u1")
    assert again.outcome is Outcome.DUPLICATE


async def test_a_repeated_interaction_is_queued_once(
    redis: aioredis.Redis, admission: MakeAdmission
) -> None:
    gate = admission(redis)
    raw = command("stats", interaction_id="904")
    assert (await gate.admit(raw, "904", "u1")).outcome is Outcome.QUEUED
    assert (await gate.admit(raw, "904", "u1")).outcome is Outcome.DUPLICATE
    assert await redis.zcard(QUEUE_NAME) == 1
    # A repeat does not use up the user's allowance.
    assert await redis.get(RATE_KEY_PREFIX + "u1") == b"1"


async def test_an_id_with_a_result_is_not_queued_again(
    redis: aioredis.Redis, admission: MakeAdmission
) -> None:
    await redis.set(RESULT_KEY_PREFIX + "905", b"done")
    verdict = await admission(redis).admit(command("stats"), "905", "u1")
    assert verdict.outcome is Outcome.DUPLICATE
    assert await redis.zcard(QUEUE_NAME) == 0


async def test_the_rate_limit_refuses_past_the_allowance_per_user(
    redis: aioredis.Redis, admission: MakeAdmission
) -> None:
    gate = admission(redis, limit=3)
    outcomes = [(await gate.admit(command("stats"), str(i), "u1")).outcome for i in range(5)]
    assert outcomes == [Outcome.QUEUED] * 3 + [Outcome.RATE_LIMITED] * 2
    refused = await gate.admit(command("stats"), "10", "u1")
    assert 0 < refused.retry_after <= 60
    assert (await gate.admit(command("stats"), "11", "u2")).outcome is Outcome.QUEUED
    assert await redis.zcard(QUEUE_NAME) == 4
    assert 0 < await redis.pttl(RATE_KEY_PREFIX + "u1") <= 60_000


async def test_the_window_ends_and_the_user_may_command_again(
    redis: aioredis.Redis, admission: MakeAdmission
) -> None:
    gate = admission(redis, limit=1)
    assert (await gate.admit(command("stats"), "1", "u1")).outcome is Outcome.QUEUED
    assert (await gate.admit(command("stats"), "2", "u1")).outcome is Outcome.RATE_LIMITED
    await redis.pexpire(RATE_KEY_PREFIX + "u1", 1)
    await asyncio.sleep(0.02)
    assert (await gate.admit(command("stats"), "3", "u1")).outcome is Outcome.QUEUED


async def test_the_script_is_reloaded_after_redis_forgets_it(
    redis: aioredis.Redis, admission: MakeAdmission
) -> None:
    gate = admission(redis)
    assert (await gate.admit(command("stats"), "1", "u1")).outcome is Outcome.QUEUED
    await redis.script_flush()
    assert (await gate.admit(command("stats"), "2", "u1")).outcome is Outcome.QUEUED
    assert await redis.zcard(QUEUE_NAME) == 2


async def test_redis_down_is_reported_within_the_timeout(
    own_redis: RedisServer, admission: MakeAdmission
) -> None:
    client = aioredis.Redis.from_url(own_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    gate = admission(client, timeout=0.5)
    try:
        assert (await gate.admit(command("stats"), "1", "u1")).outcome is Outcome.QUEUED
        own_redis.stop()
        started = time.monotonic()
        with pytest.raises(AdmissionUnavailable):
            await gate.admit(command("stats"), "2", "u1")
        assert time.monotonic() - started < 1.0
        own_redis.start()
        assert (await gate.admit(command("stats"), "3", "u1")).outcome is Outcome.QUEUED
    finally:
        await client.aclose()


async def test_a_redis_that_does_not_answer_times_out(
    redis: aioredis.Redis, admission: MakeAdmission
) -> None:
    gate = admission(redis, timeout=0.2)
    blocker = aioredis.Redis(connection_pool=redis.connection_pool)
    # CLIENT PAUSE makes the server hold every write command, as a stalled server would.
    await blocker.client_pause(1500, all=False)
    started = time.monotonic()
    with pytest.raises(AdmissionUnavailable):
        await gate.admit(command("stats"), "1", "u1")
    assert time.monotonic() - started < 0.6


async def test_concurrent_calls_on_one_connection_get_their_own_replies(
    redis: aioredis.Redis, admission: MakeAdmission
) -> None:
    gate = admission(redis, limit=1)
    assert (await gate.admit(command("stats"), "warm", "someone")).outcome is Outcome.QUEUED
    # Each user may command once: only the first of each pair is queued, and
    # the second must see the first's write, so replies cannot be swapped.
    calls = [
        gate.admit(command("stats"), f"{i}-{k}", f"user{i}") for i in range(150) for k in (0, 1)
    ]
    verdicts = await asyncio.gather(*calls)
    assert [v.outcome for v in verdicts] == [Outcome.QUEUED, Outcome.RATE_LIMITED] * 150
    assert await redis.zcard(QUEUE_NAME) == 151


async def test_after_a_timeout_the_next_call_uses_a_fresh_connection(
    redis: aioredis.Redis, admission: MakeAdmission
) -> None:
    gate = admission(redis, timeout=0.2)
    assert (await gate.admit(command("stats"), "1", "u1")).outcome is Outcome.QUEUED
    await redis.client_pause(400, all=False)
    with pytest.raises(AdmissionUnavailable):
        await gate.admit(command("stats"), "2", "u1")
    await redis.client_unpause()
    assert (await gate.admit(command("stats"), "3", "u1")).outcome is Outcome.QUEUED
    # The timed-out call may still have run once Redis resumed; never twice.
    assert await redis.zcard(QUEUE_NAME) in (2, 3)


async def test_a_full_queue_answers_busy_and_queues_nothing(
    redis: aioredis.Redis, admission: MakeAdmission
) -> None:
    gate = admission(redis, queue_limit=3)
    outcomes = [(await gate.admit(command("stats"), str(i), f"u{i}")).outcome for i in range(5)]
    assert outcomes == [Outcome.QUEUED] * 3 + [Outcome.BUSY] * 2
    assert await redis.zcard(QUEUE_NAME) == 3
    assert await redis.exists(JOB_KEY_PREFIX + "3", JOB_KEY_PREFIX + "4") == 0
    # "Try again in a minute" must be honoured: a busy answer spends no allowance.
    assert await redis.exists(RATE_KEY_PREFIX + "u3") == 0
    # A repeat of a queued interaction is still recognised as one.
    assert (await gate.admit(command("stats"), "0", "u0")).outcome is Outcome.DUPLICATE
    # Once the worker takes a job off the queue there is room again.
    await redis.zrem(QUEUE_NAME, "0")
    assert (await gate.admit(command("stats"), "5", "u5")).outcome is Outcome.QUEUED
    assert (await gate.admit(command("stats"), "6", "u6")).outcome is Outcome.BUSY


async def test_every_job_in_the_queue_counts_towards_the_limit(
    redis: aioredis.Redis, admission: MakeAdmission
) -> None:
    # Syncs and other jobs share the queue and the worker; they make it busy too.
    arq_redis = ArqRedis(connection_pool=redis.connection_pool)
    await arq_redis.enqueue_job("run_sync", ["1"], [], _job_id="sync-1")
    await arq_redis.enqueue_job("run_sync", ["2"], [], _job_id="sync-2")
    gate = admission(redis, queue_limit=3)
    assert (await gate.admit(command("stats"), "1", "u1")).outcome is Outcome.QUEUED
    assert (await gate.admit(command("stats"), "2", "u2")).outcome is Outcome.BUSY


async def test_a_queue_limit_of_zero_means_no_limit(
    redis: aioredis.Redis, admission: MakeAdmission
) -> None:
    gate = admission(redis, queue_limit=0)
    verdicts = await asyncio.gather(
        *(gate.admit(command("stats"), str(i), f"u{i}") for i in range(300))
    )
    assert {v.outcome for v in verdicts} == {Outcome.QUEUED}
    assert await redis.zcard(QUEUE_NAME) == 300


async def test_admissions_with_different_limits_run_their_own_scripts(
    redis: aioredis.Redis, admission: MakeAdmission
) -> None:
    strict, lenient = admission(redis, queue_limit=1), admission(redis, queue_limit=10)
    assert strict.script_sha != lenient.script_sha
    assert (await strict.admit(command("stats"), "1", "u1")).outcome is Outcome.QUEUED
    assert (await strict.admit(command("stats"), "2", "u2")).outcome is Outcome.BUSY
    assert (await lenient.admit(command("stats"), "3", "u3")).outcome is Outcome.QUEUED
