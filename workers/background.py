"""The worker's jobs other than answering an interaction: syncs, maintenance, hand-offs.

The command line queues `run_sync`, `run_ask`, `run_reindex`, `run_forget` and
`backup_state` when workers run; cron runs the periodic sync and the upkeep. Maintenance
holds the maintenance lease (app.ops.leases): one job at a time on any worker, never
during a sync.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from app.commands.ask import answer_for_terminal
from app.commands.privacy import forget_for_owner
from app.commands.resources import Resources
from app.jobs import (
    BACKUP_JOB,
    INTEGRITY_JOB,
    INTEGRITY_KEY,
    LAST_SYNC_KEY,
    RUN_REINDEX,
    RUN_SYNC,
    SYNC_GUILDS,
    VACUUM_JOB,
)
from app.ops.backup import snapshot
from app.ops.leases import maintenance
from app.ops.upkeep import check_integrity, rebuild_index, vacuum
from workers.metrics import WorkerMetrics

# A sync runs at most this long per job; the next run resumes from the stored cursors.
SYNC_JOB_TIMEOUT = 3600
# Maintenance (backup, reindex, upkeep) waits this long for running syncs before giving up.
BACKUP_WAIT = 600.0
T = TypeVar("T")


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
    summary = await timed(ctx, SYNC_GUILDS, resources.sync.sync_guilds(settings.sync_guild_ids))
    ctx["metrics"].synced(summary.new, summary.edited, summary.deleted)
    return summary.line()


async def run_sync(ctx: dict[str, Any], guilds: list[str], channels: list[str]) -> str:
    """A sync asked for on the command line while this worker owns the state."""
    resources: Resources = ctx["resources"]
    metrics: WorkerMetrics = ctx["metrics"]
    lines = []
    if guilds:
        summary = await timed(ctx, RUN_SYNC, resources.sync.sync_guilds(guilds))
        metrics.synced(summary.new, summary.edited, summary.deleted)
        lines.append(summary.line())
    if channels:
        summary = await timed(ctx, RUN_SYNC, resources.sync.sync_channels(channels))
        metrics.synced(summary.new, summary.edited, summary.deleted)
        lines.append(summary.line())
    return "; ".join(lines)


async def backup_state(ctx: dict[str, Any], dest: str) -> str:
    """A backup asked for on the command line while this worker owns the state."""
    resources: Resources = ctx["resources"]
    # A sync writes the database and the index together; copy them between syncs.
    async with maintenance(ctx["leases"], "back up", wait=BACKUP_WAIT):
        result = await timed(
            ctx, BACKUP_JOB, asyncio.to_thread(snapshot, resources.settings, Path(dest))
        )
    return result.line("backed up to")


async def run_forget(ctx: dict[str, Any], user_id: str, undo: bool) -> str:
    """`python -m app forget` while a worker runs: the opt-out (or back in) is done here."""
    resources: Resources = ctx["resources"]
    return await forget_for_owner(resources.state, user_id, undo=undo)


async def run_reindex(ctx: dict[str, Any]) -> str:
    """A reindex asked for on the command line while workers run: no sync meanwhile, and
    every worker goes on answering from the collection as it fills again."""
    state = ctx["resources"].state
    async with maintenance(ctx["leases"], "reindex", wait=BACKUP_WAIT):
        return await timed(ctx, RUN_REINDEX, rebuild_index(state.store, state.index, state.indexer))


async def integrity_job(ctx: dict[str, Any]) -> str:
    """Daily: PRAGMA integrity_check and an index probe; the result goes to /health."""
    resources: Resources = ctx["resources"]
    async with maintenance(ctx["leases"], "check integrity", wait=BACKUP_WAIT):
        result = await timed(
            ctx, INTEGRITY_JOB, check_integrity(resources.state.store, resources.state.index)
        )
    await ctx["redis"].set(INTEGRITY_KEY, json.dumps(result))
    return "ok" if result["ok"] else str(result["error"])


async def vacuum_job(ctx: dict[str, Any]) -> str:
    """Weekly: VACUUM and ANALYZE the database."""
    resources: Resources = ctx["resources"]
    async with maintenance(ctx["leases"], "vacuum", wait=BACKUP_WAIT):
        return await timed(ctx, VACUUM_JOB, vacuum(resources.state.store))


async def timed(ctx: dict[str, Any], name: str, work: Awaitable[T]) -> T:
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
