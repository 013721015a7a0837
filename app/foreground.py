"""The command-line commands that write state: sync, import and reindex.

Each opens the state itself (so no worker may be running: the lock says who
is); `sync` instead hands its work to a running worker through the queue.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from app.discord.rest import DiscordRest
from app.errors import BotError, StateLockedError
from app.handoff import run_on_worker
from app.jobs import RUN_ASK, RUN_SYNC
from app.settings import Settings
from app.state import State
from app.store.exporter import parse_export
from app.store.models import ChannelAccess
from app.sync.runner import SyncRunner, SyncSummary

if TYPE_CHECKING:
    from app.llm.generator import Generator
    from app.retrieval.search import Retriever

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
        raise BotError("DISCORD_BOT_TOKEN: set it to sync history")
    if not guilds and not channels:
        guilds = list(settings.sync_guild_ids)
    if not guilds and not channels:
        raise BotError("SYNC_GUILD_IDS: name a guild (--guild ID) or set SYNC_GUILD_IDS")
    try:
        state = await State.open(settings, "sync command")
    except StateLockedError as exc:
        return await run_on_worker(settings, exc, RUN_SYNC, guilds, channels)
    progress = Progress("syncing")
    try:
        async with DiscordRest(settings.discord_api_base, settings.discord_bot_token) as rest:
            runner = SyncRunner(
                rest,
                state.store,
                state.indexer,
                recheck_seconds=settings.sync_recheck_days * 86_400,
            )
            summary = SyncSummary()
            if guilds:
                summary = await runner.sync_guilds(guilds, progress.advance)
            if channels:
                more = await runner.sync_channels(channels, progress.advance)
                summary = _merge(summary, more)
            return summary
    finally:
        progress.close()
        await state.close()


def _merge(a: SyncSummary, b: SyncSummary) -> SyncSummary:
    return SyncSummary(
        channels=a.channels + b.channels,
        new=a.new + b.new,
        edited=a.edited + b.edited,
        deleted=a.deleted + b.deleted,
        embedded=a.embedded + b.embedded,
        seconds=a.seconds + b.seconds,
        no_access=a.no_access + b.no_access,
        content_intent_missing=a.content_intent_missing or b.content_intent_missing,
    )


async def ask(
    settings: Settings, question: str, channel_id: str, scope: str, user_id: str | None
) -> str:
    """Answer a question as /ask would, for the terminal (through the worker if it runs)."""
    from app.llm.generator import Generator
    from app.retrieval.search import Retriever
    from workers.answers import answer_for_terminal

    try:
        state = await State.open(settings, "ask command")
    except StateLockedError as exc:
        return await run_on_worker(settings, exc, RUN_ASK, question, channel_id, scope, user_id)
    try:
        generator = Generator.from_settings(settings)
        await asyncio.to_thread(generator.load)
        answering = _Answering(state, Retriever(state.store, state.index), generator)
        try:
            if settings.discord_bot_token is None:
                return await answer_for_terminal(
                    answering, None, question, channel_id, scope=scope, user_id=user_id
                )
            async with DiscordRest(settings.discord_api_base, settings.discord_bot_token) as rest:
                return await answer_for_terminal(
                    answering, rest, question, channel_id, scope=scope, user_id=user_id
                )
        finally:
            generator.close()
    finally:
        await state.close()


@dataclass
class _Answering:
    state: State
    retriever: Retriever
    generator: Generator


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
    """Rebuild the vector index from the store, the source of truth."""
    started = time.monotonic()
    state = await State.open(settings, "reindex command", discard_damaged_index=True)
    progress = Progress("reindexing")
    try:
        await state.index.areset()
        await state.store.reset_index_state()
        counts = await state.indexer.drain(progress.advance)
        total = await state.index.acount()
    finally:
        progress.close()
        await state.close()
    return (
        f"reindexed {counts.embedded} messages; the index holds {total}; "
        f"{time.monotonic() - started:.1f} s"
    )
