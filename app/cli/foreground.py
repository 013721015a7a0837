"""The command-line commands that work on the state: sync, import, reindex, ask and backup.

Each opens the state itself (so no worker may be running: the lock says who
is); `sync`, `ask` and `backup` instead hand their work to a running worker
through the queue.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import TextIO

from app.cli.handoff import run_on_worker, workers_running
from app.discord.exporter import parse_export
from app.errors import StateLockedError, UsageError
from app.jobs import BACKUP_JOB, RUN_ASK, RUN_REINDEX, RUN_SYNC
from app.ops.backup import snapshot
from app.ops.upkeep import rebuild_index
from app.settings import Settings
from app.state import State
from app.store.lock import StateLock
from app.store.models import ChannelAccess
from app.sync.runner import SyncSummary

logger = logging.getLogger(__name__)


class Progress:
    """A one-line progress counter on a terminal (silent when not a terminal)."""

    def __init__(self, label: str, stream: TextIO = sys.stderr) -> None:
        self._label = label
        self._stream = stream
        self._count = 0
        self._started = time.monotonic()
        self._shown = 0.0
        self._tty = stream.isatty()

    def advance(self, count: int) -> None:
        """Count `count` more items and redraw at most ten times a second."""
        self._count += count
        now = time.monotonic()
        if self._tty and now - self._shown >= 0.1:
            self._shown = now
            rate = self._count / max(now - self._started, 1e-6)
            self._stream.write(f"\r{self._label}: {self._count:,} messages ({rate:,.0f}/s)   ")
            self._stream.flush()

    def close(self) -> None:
        """End the progress line."""
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


async def sync(settings: Settings, guilds: list[str], channels: list[str]) -> SyncSummary | str:
    """Sync in the foreground, or through the running worker when it owns the state."""
    if settings.discord_bot_token is None:
        raise UsageError("DISCORD_BOT_TOKEN: set it to sync history")
    if not guilds and not channels:
        guilds = list(settings.sync_guild_ids)
    if not guilds and not channels:
        raise UsageError("SYNC_GUILD_IDS: name a guild (--guild ID) or set SYNC_GUILD_IDS")
    from app.commands.resources import open_resources

    if busy := await workers_running(settings):
        return await run_on_worker(settings, busy, RUN_SYNC, guilds, channels)
    try:
        resources = await open_resources(settings, "sync command", model=False)
    except StateLockedError as exc:
        return await run_on_worker(settings, exc, RUN_SYNC, guilds, channels)
    progress = Progress("syncing")
    try:
        summary = SyncSummary()
        if guilds:
            summary = await resources.sync.sync_guilds(guilds, progress.advance)
        if channels:
            more = await resources.sync.sync_channels(channels, progress.advance)
            summary = _merge(summary, more)
        return summary
    finally:
        progress.close()
        await resources.close()


def _merge(a: SyncSummary, b: SyncSummary) -> SyncSummary:
    return SyncSummary(
        channels=a.channels + b.channels,
        new=a.new + b.new,
        edited=a.edited + b.edited,
        deleted=a.deleted + b.deleted,
        embedded=a.embedded + b.embedded,
        seconds=a.seconds + b.seconds,
        no_access=a.no_access + b.no_access,
        busy=a.busy + b.busy,
        content_intent_missing=a.content_intent_missing or b.content_intent_missing,
    )


async def ask(
    settings: Settings, question: str, channel_id: str, scope: str, user_id: str | None
) -> str:
    """Answer a question as /ask would, for the terminal (through the worker if it runs)."""
    from app.commands.ask import answer_for_terminal
    from app.commands.resources import open_resources

    if busy := await workers_running(settings):
        return await run_on_worker(settings, busy, RUN_ASK, question, channel_id, scope, user_id)
    try:
        resources = await open_resources(settings, "ask command")
    except StateLockedError as exc:
        return await run_on_worker(settings, exc, RUN_ASK, question, channel_id, scope, user_id)
    try:
        return await answer_for_terminal(
            resources, question, channel_id, scope=scope, user_id=user_id
        )
    finally:
        await resources.close()


async def import_export(settings: Settings, path: Path) -> str:
    """Import a DiscordChatExporter JSON file through the store and the index."""
    started = time.monotonic()
    export = parse_export(path)
    state = await State.open(settings, "import command")
    progress = Progress("importing")
    new = edited = unchanged = 0
    try:
        store = state.store
        if await store.get_channel(export.channel.id) is None:
            # A synced channel keeps its permission overwrites; an export carries none.
            await store.upsert_channels([export.channel])
            await store.set_channel_access(export.channel.id, ChannelAccess.UNVERIFIED)
        for page in export.pages():
            result = await store.save_page(export.channel.id, page)
            new += len(result.new)
            edited += len(result.edited)
            unchanged += len(result.unchanged)
            progress.advance(len(page))
        progress.close()
        progress = Progress("indexing")
        await state.indexer.drain(progress.advance)
    finally:
        progress.close()
        await state.close()
    return (
        f"imported #{export.channel.name}: {new} new, {edited} updated, {unchanged} unchanged, "
        f"{time.monotonic() - started:.1f} s"
    )


async def reindex(settings: Settings) -> str:
    """Rebuild the vector and the lexical index from the store, the source of truth:
    here, or by a worker when any runs (which goes on answering meanwhile)."""
    if busy := await workers_running(settings):
        return await run_on_worker(settings, busy, RUN_REINDEX)
    try:
        state = await State.open(settings, "reindex command", discard_damaged_index=True)
    except StateLockedError as exc:
        return await run_on_worker(settings, exc, RUN_REINDEX)
    progress = Progress("reindexing")
    try:
        return await rebuild_index(state.store, state.index, state.indexer, progress.advance)
    finally:
        progress.close()
        await state.close()


async def backup(settings: Settings, dest: Path) -> str:
    """`python -m app backup DEST` (DEST absolute): here, or through the worker when it runs."""
    if busy := await workers_running(settings):
        return await run_on_worker(settings, busy, BACKUP_JOB, str(dest))
    lock = StateLock(settings.data_dir, "backup command")
    try:
        lock.acquire()
    except StateLockedError as exc:
        return await run_on_worker(settings, exc, BACKUP_JOB, str(dest))
    try:
        result = await asyncio.to_thread(snapshot, settings, dest)
    finally:
        lock.release()
    return result.line("backed up to")
