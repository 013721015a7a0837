"""The arq worker: receives queued interactions and runs the command handlers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from arq.connections import ArqRedis
from arq.cron import cron
from arq.worker import Worker, func
from prometheus_client import CollectorRegistry, start_http_server
from redis.exceptions import RedisError

from app.commands.ask import answer_for_terminal
from app.commands.delivery import RedisFollowupLedger, Reply
from app.commands.handlers import HANDLERS
from app.commands.resources import Resources, open_resources
from app.errors import CommandError, UsageError
from app.interactions.commands import is_ephemeral
from app.interactions.invocation import InvalidInvocation, Invocation
from app.jobs import (
    BACKUP_JOB,
    HANDLE_INTERACTION,
    HEARTBEAT_INTERVAL,
    IN_PROGRESS_KEY_PREFIX,
    INTEGRITY_JOB,
    INTEGRITY_KEY,
    INTERACTION_TOKEN_LIFETIME,
    LAST_SYNC_KEY,
    QUEUE_NAME,
    RUN_ASK,
    RUN_SYNC,
    SYNC_GUILDS,
    VACUUM_JOB,
    WORKER_REPORT_KEY,
)
from app.logs import interaction_id_var
from app.ops.backup import snapshot
from app.ops.upkeep import check_integrity, vacuum
from app.ops.windows import MinuteWindow, WindowFlusher, stop_task
from app.settings import Settings
from app.store.models import AuditEntry
from health import disk_percent
from workers.metrics import WorkerMetrics

logger = logging.getLogger(__name__)

# Leave the last moments of the token's life unused: a reply needs time to land.
_TOKEN_MARGIN = 20.0
# A sync runs at most this long per job; the next run resumes from the stored cursors.
SYNC_JOB_TIMEOUT = 3600
T = TypeVar("T")
# A backup waits this long for a running sync to finish before giving up.
BACKUP_WAIT = 600.0


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


async def sync_configured_guilds(ctx: dict[str, Any]) -> str:
    """The periodic sync of SYNC_GUILD_IDS; runs never overlap."""
    resources: Resources = ctx["resources"]
    settings = resources.settings
    if not settings.sync_guild_ids or settings.discord_bot_token is None:
        return "not configured"
    if resources.sync.running:
        return "skipped: a sync is running"
    now = ctx.get("clock", time.time)()
    last = await ctx["redis"].get(LAST_SYNC_KEY)
    if last is not None and now - float(last) < settings.sync_interval:
        return "not due"
    await ctx["redis"].set(LAST_SYNC_KEY, str(now))
    summary = await _timed(ctx, SYNC_GUILDS, resources.sync.sync_guilds(settings.sync_guild_ids))
    ctx["metrics"].synced(summary.new, summary.edited, summary.deleted)
    return summary.line()


async def run_sync(ctx: dict[str, Any], guilds: list[str], channels: list[str]) -> str:
    """A sync asked for on the command line while this worker owns the state."""
    resources: Resources = ctx["resources"]
    metrics: WorkerMetrics = ctx["metrics"]
    lines = []
    if guilds:
        summary = await _timed(ctx, RUN_SYNC, resources.sync.sync_guilds(guilds))
        metrics.synced(summary.new, summary.edited, summary.deleted)
        lines.append(summary.line())
    if channels:
        summary = await _timed(ctx, RUN_SYNC, resources.sync.sync_channels(channels))
        metrics.synced(summary.new, summary.edited, summary.deleted)
        lines.append(summary.line())
    return "; ".join(lines)


async def backup_state(ctx: dict[str, Any], dest: str) -> str:
    """A backup asked for on the command line while this worker owns the state."""
    resources: Resources = ctx["resources"]
    waited = 0.0
    # A sync writes the database and the index together; copy them between syncs.
    while resources.sync.running:
        if waited >= BACKUP_WAIT:
            raise UsageError(f"a sync has been running for over {BACKUP_WAIT:.0f} s; try later")
        await asyncio.sleep(1.0)
        waited += 1.0
    result = await _timed(
        ctx, BACKUP_JOB, asyncio.to_thread(snapshot, resources.settings, Path(dest))
    )
    return result.line("backed up to")


async def integrity_job(ctx: dict[str, Any]) -> str:
    """Daily: PRAGMA integrity_check and an index probe; the result goes to /health."""
    resources: Resources = ctx["resources"]
    result = await _timed(
        ctx, INTEGRITY_JOB, check_integrity(resources.state.store, resources.state.index)
    )
    await ctx["redis"].set(INTEGRITY_KEY, json.dumps(result))
    return "ok" if result["ok"] else str(result["error"])


async def vacuum_job(ctx: dict[str, Any]) -> str:
    """Weekly: VACUUM and ANALYZE the database."""
    resources: Resources = ctx["resources"]
    return await _timed(ctx, VACUUM_JOB, vacuum(resources.state.store))


async def _timed(ctx: dict[str, Any], name: str, work: Awaitable[T]) -> T:
    """Await `work`, counting it as a job named `name` in the metrics."""
    metrics: WorkerMetrics = ctx["metrics"]
    started = time.monotonic()
    outcome = "failed"
    try:
        result = await work
        outcome = "ok"
        return result
    finally:
        metrics.job_done(name, outcome, time.monotonic() - started)


async def run_ask(
    ctx: dict[str, Any], question: str, channel_id: str, scope: str, user_id: str | None
) -> str:
    """A question asked on the command line while this worker owns the state."""
    resources: Resources = ctx["resources"]
    return await answer_for_terminal(resources, question, channel_id, scope=scope, user_id=user_id)


async def _startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    metrics: WorkerMetrics = ctx["metrics"]
    redis: ArqRedis = ctx["redis"]
    if settings.discord_bot_token is None:
        logger.warning("DISCORD_BOT_TOKEN is not set: sync cannot run; replies still work")
    resources = await open_resources(
        settings,
        "worker",
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
    flusher = WindowFlusher(
        MinuteWindow(redis),
        "jobs",
        lambda: metrics.interaction_snapshot(HANDLE_INTERACTION),
    )
    ctx["flusher"] = flusher
    await _report(resources, redis, metrics)
    ctx["background"] = [
        asyncio.create_task(flusher.run()),
        asyncio.create_task(_report_every(resources, redis, metrics, HEARTBEAT_INTERVAL)),
    ]


async def _report(resources: Resources, redis: ArqRedis, metrics: WorkerMetrics) -> None:
    """Write what /health needs from the worker: its database, its index and its disk."""
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
    await redis.set(WORKER_REPORT_KEY, json.dumps(report), ex=3 * HEARTBEAT_INTERVAL)


async def _report_every(
    resources: Resources, redis: ArqRedis, metrics: WorkerMetrics, interval: float
) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await _report(resources, redis, metrics)
        except (RedisError, OSError) as exc:
            logger.warning("could not write the worker's health report: %s", exc)


async def _shutdown(ctx: dict[str, Any]) -> None:
    for task in ctx.pop("background", []):
        await stop_task(task)
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
    return Worker(
        functions=[
            func(handle_interaction, name=HANDLE_INTERACTION, timeout=timeout),
            func(run_sync, name=RUN_SYNC, timeout=SYNC_JOB_TIMEOUT, max_tries=1),
            func(run_ask, name=RUN_ASK, timeout=timeout, max_tries=1),
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
        ctx=context,
        max_jobs=8,
        max_tries=3,
        job_timeout=timeout,
        keep_result=INTERACTION_TOKEN_LIFETIME,
        health_check_interval=HEARTBEAT_INTERVAL,
    )


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
