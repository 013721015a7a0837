"""One sync run: discover channels, roles and threads, pull history, keep the index in step."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.discord.errors import DiscordForbidden, DiscordNotFound
from app.discord.payloads import channel_from_discord, role_from_discord
from app.discord.rest import DiscordRest
from app.ops.leases import CHANNEL_WAIT, Leases, LocalLeases, channel_sync
from app.store.db import Store
from app.store.models import ChannelRecord
from app.sync.history import ChannelResult, HistorySync
from app.sync.indexer import Indexer

logger = logging.getLogger(__name__)

# Channel types that hold messages: text, announcement, and the three thread kinds.
MESSAGE_CHANNEL_TYPES = frozenset({0, 5, 10, 11, 12})
# Channel types whose threads we look for: text, announcement, forum, media.
THREAD_PARENT_TYPES = frozenset({0, 5, 15, 16})


@dataclass
class SyncSummary:
    """What a run did, for the log line, the CLI and the /sync reply."""

    channels: int = 0
    new: int = 0
    edited: int = 0
    deleted: int = 0
    embedded: int = 0
    seconds: float = 0.0
    no_access: list[str] = field(default_factory=list)
    # Channels another worker was syncing (or a maintenance job held) all along: skipped.
    busy: list[str] = field(default_factory=list)
    content_intent_missing: bool = False

    def add(self, result: ChannelResult, name: str) -> None:
        self.channels += 1
        self.new += result.new
        self.edited += result.edited
        self.deleted += result.deleted
        if result.no_access:
            self.no_access.append(name)
        self.content_intent_missing |= result.content_intent_missing

    def line(self) -> str:
        """One line: channels, new, edited, deleted, seconds, and any warning."""
        text = (
            f"{self.channels} channels, {self.new} new, {self.edited} edited, "
            f"{self.deleted} deleted, {self.seconds:.1f} s"
        )
        if self.no_access:
            text += f"; no access to {len(self.no_access)}: " + ", ".join(
                f"#{n}" for n in self.no_access[:5]
            )
        if self.busy:
            text += f"; {len(self.busy)} being synced by another worker: " + ", ".join(
                f"#{n}" for n in self.busy[:5]
            )
        if self.content_intent_missing:
            text += "; message text is missing: enable the MESSAGE CONTENT intent"
        return text


class SyncRunner:
    """Runs syncs one at a time (a second caller waits for the first).

    Across processes, `leases` let one sync of a channel run at a time on any worker and
    keep syncs out of the way of maintenance (app.ops.leases); a channel still held by
    another after `busy_wait` seconds is skipped and named in the summary.
    """

    def __init__(
        self,
        rest: DiscordRest,
        store: Store,
        indexer: Indexer,
        *,
        recheck_seconds: float,
        clock: Callable[[], float] = time.time,
        leases: Leases | None = None,
        busy_wait: float = CHANNEL_WAIT,
    ) -> None:
        self._rest = rest
        self._leases: Leases = leases if leases is not None else LocalLeases()
        self._busy_wait = busy_wait
        self._store = store
        self._indexer = indexer
        self._recheck_seconds = recheck_seconds
        self._clock = clock
        self._lock = asyncio.Lock()
        self._bot_user_id: str | None = None

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self._lock.locked()

    async def sync_guilds(
        self, guild_ids: Sequence[str], on_page: Callable[[int], None] | None = None
    ) -> SyncSummary:
        """Sync every readable message channel and thread of the guilds."""
        return await self._run(self._discover_guild, guild_ids, on_page)

    async def sync_channels(
        self, channel_ids: Sequence[str], on_page: Callable[[int], None] | None = None
    ) -> SyncSummary:
        """Sync some channels and their threads."""
        return await self._run(self._discover_channel, channel_ids, on_page)

    async def _run(
        self,
        discover: Callable[[str], Awaitable[list[ChannelRecord]]],
        ids: Sequence[str],
        on_page: Callable[[int], None] | None,
    ) -> SyncSummary:
        async with self._lock:
            started = time.monotonic()
            channels: list[ChannelRecord] = []
            for found_id in ids:
                channels.extend(await discover(found_id))
            summary = await self._sync(channels, on_page)
            summary.seconds = time.monotonic() - started
            logger.info("sync of %s done: %s", ",".join(ids), summary.line())
            return summary

    async def _sync(
        self, channels: list[ChannelRecord], on_page: Callable[[int], None] | None
    ) -> SyncSummary:
        if self._bot_user_id is None:
            self._bot_user_id = str((await self._rest.get_current_user())["id"])
        pages_written = asyncio.Event()

        def page_done(count: int) -> None:
            pages_written.set()
            if on_page is not None:
                on_page(count)

        history = HistorySync(
            self._rest,
            self._store,
            bot_user_id=self._bot_user_id,
            recheck_seconds=self._recheck_seconds,
            clock=self._clock,
            on_page=page_done,
        )
        summary = SyncSummary()
        done = asyncio.Event()
        indexing = asyncio.create_task(self._indexer.follow(pages_written, done))
        try:
            for channel in channels:
                async with channel_sync(self._leases, channel.id, wait=self._busy_wait) as held:
                    if not held:
                        summary.busy.append(channel.name)
                        continue
                    summary.add(await history.sync_channel(channel), channel.name)
                pages_written.set()
        except BaseException:
            # The index catches up on what was stored even when the run fails part-way,
            # and the error that stopped the run (a full disk, say) stays the one reported.
            done.set()
            try:
                await indexing
            except Exception:
                logger.exception("the index did not catch up with the stopped sync")
            raise
        done.set()
        counts = await indexing
        summary.embedded = counts.embedded
        return summary

    async def _discover_guild(self, guild_id: str) -> list[ChannelRecord]:
        """Store the guild's roles and channels; return the ones holding messages."""
        roles = await self._rest.get_guild_roles(guild_id)
        await self._store.replace_roles(guild_id, [role_from_discord(r, guild_id) for r in roles])
        listed = [_with_guild(c, guild_id) for c in await self._rest.get_guild_channels(guild_id)]
        threads = await self._threads(
            guild_id, [c for c in listed if c.type in THREAD_PARENT_TYPES]
        )
        channels = listed + threads
        await self._store.upsert_channels(channels)
        return [c for c in channels if c.type in MESSAGE_CHANNEL_TYPES]

    async def _discover_channel(self, channel_id: str) -> list[ChannelRecord]:
        """Store one channel (and its threads); return the ones holding messages."""
        channel = channel_from_discord(await self._rest.get_channel(channel_id))
        found = [channel]
        if channel.guild_id is not None and channel.type in THREAD_PARENT_TYPES:
            found += await self._threads(channel.guild_id, [channel])
        await self._store.upsert_channels(found)
        return [c for c in found if c.type in MESSAGE_CHANNEL_TYPES]

    async def _threads(
        self, guild_id: str, parents: Iterable[ChannelRecord]
    ) -> list[ChannelRecord]:
        """Active and archived (public and private) threads under the given parents."""
        parent_ids = {p.id for p in parents}
        threads: dict[str, ChannelRecord] = {}
        active = await self._rest.get_active_threads(guild_id)
        for payload in active.get("threads", []):
            thread = _with_guild(payload, guild_id)
            if thread.parent_id in parent_ids:
                threads[thread.id] = thread
        for parent_id in sorted(parent_ids):
            for fetch in (
                self._rest.get_public_archived_threads,
                self._rest.get_private_archived_threads,
            ):
                for payload in await _archived(fetch, parent_id):
                    thread = _with_guild(payload, guild_id)
                    threads[thread.id] = thread
        return list(threads.values())


async def _archived(fetch: Callable[..., Any], parent_id: str) -> list[dict[str, Any]]:
    """Every archived thread of one kind under a parent, paging by archive time."""
    found: list[dict[str, Any]] = []
    before: str | None = None
    while True:
        try:
            page = await fetch(parent_id, before=before)
        except (DiscordForbidden, DiscordNotFound):
            # Private archived threads need MANAGE_THREADS; not having it is normal.
            return found
        threads = page.get("threads", [])
        found.extend(threads)
        if not page.get("has_more") or not threads:
            return found
        before = min(t.get("thread_metadata", {}).get("archive_timestamp", "") for t in threads)


def _with_guild(payload: dict[str, Any], guild_id: str) -> ChannelRecord:
    """Parse a channel, filling the guild id Discord leaves out of some listings."""
    return channel_from_discord({**payload, "guild_id": payload.get("guild_id") or guild_id})
