"""The arq worker: receives queued interactions and runs the command handlers."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from arq.cron import cron
from arq.worker import Worker, func
from prometheus_client import CollectorRegistry, start_http_server
from redis.exceptions import RedisError

from app.commands.ask import prime as prime_ask
from app.commands.delivery import RedisFollowupLedger, Reply
from app.commands.handlers import HANDLERS
from app.commands.resources import Resources, open_resources
from app.discord.shared_limits import SharedLimits
from app.errors import BotError, CommandError, UsageError
from app.interactions.commands import is_ephemeral
from app.interactions.invocation import InvalidInvocation, Invocation
from app.jobs import (
    ANSWER_QUEUE_NAME,
    BACKUP_JOB,
    HANDLE_INTERACTION,
    HEARTBEAT_INTERVAL,
    IN_PROGRESS_KEY_PREFIX,
    INTEGRITY_JOB,
    INTERACTION_TOKEN_LIFETIME,
    LEASE_KEY_PREFIX,
    QUEUE_NAME,
    RUN_ASK,
    RUN_FORGET,
    RUN_REINDEX,
    RUN_SYNC,
    SYNC_GUILDS,
    VACUUM_JOB,
    worker_heartbeat_key,
)
from app.logs import interaction_id_var
from app.ops.leases import RedisLeases, holder_name
from app.ops.windows import MinuteWindow, WindowFlusher, stop_task
from app.settings import Settings
from app.store.models import AuditEntry
from workers.background import (
    SYNC_JOB_TIMEOUT,
    backup_state,
    integrity_job,
    run_ask,
    run_forget,
    run_reindex,
    run_sync,
    sync_configured_guilds,
    vacuum_job,
)
from workers.metrics import WorkerMetrics
from workers.report import claim, release, report, report_every

logger = logging.getLogger(__name__)

# Leave the last moments of the token's life unused: a reply needs time to land.
_TOKEN_MARGIN = 20.0
# Answers a worker generates at once: its one model serves one generation at a time, so it
# takes one job from the answer queue at a time and leaves the rest to idle workers.
GENERATORS = 1


async def handle_interaction(ctx: dict[str, Any], interaction: dict[str, Any]) -> str:
    """Answer one slash command; returns the outcome, which arq keeps as the result."""
    started = time.monotonic()
    outcome = "failed"
    try:
        outcome = await _handle_interaction(ctx, interaction)
        return outcome
    finally:
        metrics: WorkerMetrics = ctx["metrics"]
        metrics.job_done(HANDLE_INTERACTION, outcome, time.monotonic() - started)


async def _job_started(ctx: dict[str, Any]) -> None:
    """Name this worker as the job's owner: should it die mid-job, another worker frees the
    job once this one's heartbeat stops (workers/report.py)."""
    job_id, worker_id = ctx.get("job_id"), ctx.get("worker_id")
    if job_id is None or worker_id is None:
        return
    try:
        await claim(ctx["redis"], str(job_id), str(worker_id), SYNC_JOB_TIMEOUT)
    except (RedisError, OSError) as exc:
        logger.warning("could not record this worker as the job's owner: %s", exc)


async def _job_ended(ctx: dict[str, Any]) -> None:
    job_id = ctx.get("job_id")
    if job_id is None:
        return
    try:
        await release(ctx["redis"], str(job_id))
    except (RedisError, OSError) as exc:
        logger.warning("could not clear the job's owner: %s", exc)


async def _handle_interaction(ctx: dict[str, Any], interaction: dict[str, Any]) -> str:
    resources: Resources = ctx["resources"]
    metrics: WorkerMetrics = ctx["metrics"]
    clock: Callable[[], float] = ctx.get("clock", time.time)
    try:
        invocation = Invocation.from_raw(interaction)
    except InvalidInvocation as exc:
        logger.error("dropping an unreadable interaction: %s", exc)
        return "invalid"
    token = interaction_id_var.set(invocation.id)
    started = time.monotonic()
    outcome = "failed"
    try:
        age = clock() - invocation.created_at
        metrics.queue_wait_seconds.observe(max(0.0, age))
        if age > INTERACTION_TOKEN_LIFETIME - _TOKEN_MARGIN:
            logger.warning(
                "dropping /%s: the interaction is %.0f s old and its token has expired",
                invocation.command,
                age,
            )
            outcome = "expired"
            return outcome
        reply = Reply(
            resources.rest,
            RedisFollowupLedger(ctx["redis"]),
            interaction_id=invocation.id,
            application_id=invocation.application_id,
            token=invocation.token,
            ephemeral=is_ephemeral(invocation.command, invocation.options),
        )
        outcome = await _dispatch(resources, invocation, reply, ctx.get("job_try", 1))
        logger.info(
            "job done",
            extra={
                "job": HANDLE_INTERACTION,
                "command": invocation.command,
                "outcome": outcome,
                "try": ctx.get("job_try", 1),
                "queue_wait_ms": round(max(0.0, started - ctx.get("enqueue_monotonic", started))),
                "duration_ms": round((time.monotonic() - started) * 1000),
            },
        )
        return outcome
    finally:
        metrics.commands.labels(invocation.command, outcome).inc()
        await _audit(resources, metrics, invocation, outcome, clock())
        interaction_id_var.reset(token)


async def _audit(
    resources: Resources,
    metrics: WorkerMetrics,
    invocation: Invocation,
    outcome: str,
    now: float,
) -> None:
    entry = AuditEntry(
        interaction_id=invocation.id,
        at=datetime.fromtimestamp(now, UTC),
        guild_id=invocation.guild_id,
        channel_id=invocation.channel_id,
        user_id=invocation.user_id,
        command=invocation.command,
        outcome=outcome,
        latency_ms=max(0, round((now - invocation.created_at) * 1000)),
    )
    started = time.perf_counter()
    try:
        await resources.state.store.record_audit(entry)
    except Exception:
        # The user has their answer; a lost audit row is logged, not turned into an error.
        logger.exception("could not write the audit row of /%s", invocation.command)
    finally:
        metrics.database_seconds.labels("audit").observe(time.perf_counter() - started)


async def _dispatch(
    resources: Resources, invocation: Invocation, reply: Reply, job_try: int
) -> str:
    handler = HANDLERS.get(invocation.command)
    if handler is None:
        await reply.send(f"I don't know the command /{invocation.command}.")
        return "unknown_command"
    try:
        return await handler(resources, invocation, reply)
    except asyncio.CancelledError:
        # A shutdown or a job timeout: arq retries the job, which then answers.
        raise
    except Exception as exc:
        error_id = uuid.uuid4().hex[:8]
        logger.exception("/%s failed (error id %s)", invocation.command, error_id)
        # Only a CommandError is written for the member; anything else may name internals.
        message = str(exc) if isinstance(exc, CommandError) else "something went wrong on my side"
        try:
            await reply.send(f"Sorry, I couldn't answer that: {message}. (error id `{error_id}`)")
        except Exception:
            logger.exception("could not tell the user about error %s", error_id)
        return "error"


async def _startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    metrics: WorkerMetrics = ctx["metrics"]
    redis: ArqRedis = ctx["redis"]
    if settings.discord_bot_token is None:
        logger.warning("DISCORD_BOT_TOKEN is not set: sync cannot run; replies still work")
    ctx["worker_id"] = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    ctx["started_at"] = time.time()
    ctx["generators"] = GENERATORS
    ctx["leases"] = RedisLeases(redis, holder_name("worker"))
    resources = await open_resources(
        settings,
        "worker",
        leases=ctx["leases"],
        # Every worker spends from the one token: Discord's limits are kept in Redis.
        shared_limits=SharedLimits(redis),
        observer=metrics,
        on_generation=lambda g: metrics.generation_done(
            g.prompt_tokens, g.tokens, g.tokens_per_second
        ),
        on_search=metrics.search_seconds.observe,
    )
    ctx["resources"] = resources
    if resources.state.lock is not None:
        # Holding the state lock proves no other worker runs, so jobs marked in progress
        # were left by a worker that died: release them now rather than when the marks
        # expire, or an answer killed mid-way would wait past its token's life.
        stale = [key async for key in redis.scan_iter(match=IN_PROGRESS_KEY_PREFIX + "*")]
        if stale:
            await redis.delete(*stale)
            logger.warning("re-queued %d jobs left in progress by a stopped worker", len(stale))
        # So were its leases (a channel it was syncing): free them now, not in DEFAULT_TTL.
        leases = [key async for key in redis.scan_iter(match=LEASE_KEY_PREFIX + "*")]
        if leases:
            await redis.delete(*leases)
            logger.warning("freed %d leases held by a stopped worker", len(leases))
    flusher = WindowFlusher(
        MinuteWindow(redis),
        "jobs",
        lambda: metrics.interaction_snapshot(HANDLE_INTERACTION),
    )
    ctx["flusher"] = flusher
    await report(ctx)
    answers = _answer_worker(ctx)
    ctx["answer_worker"] = answers
    ctx["background"] = [
        asyncio.create_task(flusher.run()),
        asyncio.create_task(report_every(ctx, HEARTBEAT_INTERVAL)),
        # An answer arriving meanwhile waits for the model, as it would behind any answer.
        asyncio.create_task(_prime(resources)),
    ]
    answers.main_task = asyncio.create_task(answers.main())


async def _prime(resources: Resources) -> None:
    try:
        await prime_ask(resources)
    except BotError as exc:
        logger.warning("could not read /ask's instructions into the model ahead: %s", exc)


def _answer_worker(ctx: dict[str, Any]) -> Worker:
    """The second arq Worker of this process: the answer queue, one job per generator.

    It shares the first's context (resources, Redis, metrics), so it costs nothing to
    open; the first keeps the general queue (search, stats, sync, cron jobs).
    """
    main: Worker = ctx["main_worker"]
    return Worker(
        functions=[
            func(handle_interaction, name=HANDLE_INTERACTION, timeout=main.job_timeout_s),
        ],
        queue_name=ANSWER_QUEUE_NAME,
        redis_pool=ctx["redis"],
        burst=main.burst,
        poll_delay=main.poll_delay_s,
        handle_signals=False,
        ctx=ctx,
        max_jobs=GENERATORS,
        on_job_start=_job_started,
        on_job_end=_job_ended,
        max_tries=main.max_tries,
        job_timeout=main.job_timeout_s,
        keep_result=main.keep_result_s,
        health_check_interval=HEARTBEAT_INTERVAL,
    )


async def _stop_answer_worker(ctx: dict[str, Any]) -> None:
    """Let a burst run finish its answer queue; otherwise stop taking answers, and cancel
    the running ones (arq runs them again, on this worker or another)."""
    answers: Worker | None = ctx.pop("answer_worker", None)
    if answers is None or answers.main_task is None:
        return
    if not answers.burst:
        answers.allow_pick_jobs = False
        for task in answers.tasks.values():
            task.cancel()
        answers.main_task.cancel()
    results = await asyncio.gather(
        answers.main_task, *answers.tasks.values(), return_exceptions=True
    )
    for result in results:
        if isinstance(result, Exception):
            logger.error("the answer queue stopped with an error: %r", result)


async def _shutdown(ctx: dict[str, Any]) -> None:
    await _stop_answer_worker(ctx)
    for task in ctx.pop("background", []):
        await stop_task(task)
    worker_id = ctx.get("worker_id")
    if worker_id is not None:
        try:
            await ctx["redis"].delete(worker_heartbeat_key(worker_id))
        except (RedisError, OSError) as exc:
            logger.warning("could not remove this worker's heartbeat: %s", exc)
    flusher: WindowFlusher | None = ctx.get("flusher")
    if flusher is not None:
        try:
            await flusher.flush()
        except (RedisError, OSError) as exc:
            logger.warning("the last job counters were not written: %s", exc)
    resources: Resources | None = ctx.get("resources")
    if resources is not None:
        await resources.close()


def build_worker(
    settings: Settings,
    redis: ArqRedis,
    *,
    burst: bool = False,
    handle_signals: bool = True,
    ctx: dict[str, Any] | None = None,
    job_timeout: float | None = None,
    poll_delay: float = 0.2,
    metrics: WorkerMetrics | None = None,
) -> Worker:
    """An arq Worker for the given settings, reading jobs from `redis`."""
    context: dict[str, Any] = {
        "settings": settings,
        "metrics": metrics or WorkerMetrics(CollectorRegistry()),
        **(ctx or {}),
    }
    timeout = job_timeout if job_timeout is not None else settings.answer_deadline + 60
    worker = Worker(
        functions=[
            func(handle_interaction, name=HANDLE_INTERACTION, timeout=timeout),
            func(run_sync, name=RUN_SYNC, timeout=SYNC_JOB_TIMEOUT, max_tries=1),
            func(run_ask, name=RUN_ASK, timeout=timeout, max_tries=1),
            func(run_reindex, name=RUN_REINDEX, timeout=SYNC_JOB_TIMEOUT, max_tries=1),
            func(run_forget, name=RUN_FORGET, timeout=SYNC_JOB_TIMEOUT, max_tries=1),
            func(backup_state, name=BACKUP_JOB, timeout=SYNC_JOB_TIMEOUT, max_tries=1),
        ],
        cron_jobs=[
            cron(
                sync_configured_guilds,
                name=SYNC_GUILDS,
                second=0,
                run_at_startup=True,
                unique=True,
                timeout=SYNC_JOB_TIMEOUT,
                max_tries=1,
            ),
            # Daily at 04:10 and weekly on Sunday at 04:40, both local time of the worker.
            cron(
                integrity_job,
                name=INTEGRITY_JOB,
                hour=4,
                minute=10,
                unique=True,
                timeout=SYNC_JOB_TIMEOUT,
                max_tries=1,
            ),
            cron(
                vacuum_job,
                name=VACUUM_JOB,
                weekday="sun",
                hour=4,
                minute=40,
                unique=True,
                timeout=SYNC_JOB_TIMEOUT,
                max_tries=1,
            ),
        ],
        queue_name=QUEUE_NAME,
        redis_pool=redis,
        burst=burst,
        poll_delay=poll_delay,
        handle_signals=handle_signals,
        on_startup=_startup,
        on_shutdown=_shutdown,
        on_job_start=_job_started,
        on_job_end=_job_ended,
        ctx=context,
        max_jobs=8,
        max_tries=3,
        job_timeout=timeout,
        keep_result=INTERACTION_TOKEN_LIFETIME,
        health_check_interval=HEARTBEAT_INTERVAL,
    )
    # The answer queue's worker, started with the resources, copies this one's settings.
    context["main_worker"] = worker
    return worker


def run_worker(settings: Settings) -> int:
    """`python -m app worker`: run until SIGINT or SIGTERM."""
    if settings.redis_url is None:
        raise UsageError("REDIS_URL: the worker needs the queue's Redis URL")
    redis = ArqRedis.from_url(settings.redis_url)
    metrics = WorkerMetrics(CollectorRegistry())
    server = None
    try:
        server, _ = start_http_server(settings.metrics_port, registry=metrics.registry)
        logger.info("worker metrics on port %d", settings.metrics_port)
    except OSError as exc:
        # Answers matter more than metrics: run on, and say why there are none.
        logger.error("no worker metrics: port %d is unavailable (%s)", settings.metrics_port, exc)
    try:
        build_worker(settings, redis, metrics=metrics).run()
    finally:
        if server is not None:
            server.shutdown()
    return 0
