"""Pulling one channel's history over REST into the store, losing nothing.

A channel's cursor lives in its `channels` row and is committed in the same
transaction as the page of messages it covers, so a crash or kill at any
point resumes exactly where the last committed page ended:

- **backfill** (first runs): pages of 100 with `before=`, newest first, down
  to the first message; the cursor is the oldest id stored so far, and the
  newest id seen on the first page becomes the forward cursor;
- **forward** (every run): pages with `after=` the newest stored id until a
  short page; Discord returns the 100 messages just after the cursor;
- **refetch** (after members opt back in): pages with `after=` through the span of ids
  recorded for the channel (`app.store.privacy`), so their text comes back from Discord;
  the span's cursor moves in each page's transaction;
- **recheck** (every later run): re-reads the recent window (SYNC_RECHECK_DAYS) from
  the newest message down; changed text updates the row (and re-embeds),
  stored ids the window no longer holds are marked deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from app.discord.errors import DiscordForbidden, DiscordNotFound
from app.discord.payloads import message_from_discord
from app.discord.snowflakes import time_snowflake
from app.store.db import Store
from app.store.models import (
    MESSAGE_DEFAULT,
    MESSAGE_REPLY,
    ChannelAccess,
    ChannelRecord,
    PageResult,
    StoredMessage,
)

logger = logging.getLogger(__name__)

PAGE_SIZE = 100
# A page with at least this many user messages, all of them without text,
# means the bot lacks the MESSAGE_CONTENT intent (an image-only post is fine).
_INTENT_EVIDENCE = 3


class MessageSource(Protocol):
    """The one REST call the history sync needs (DiscordRest provides it)."""

    async def get_channel_messages(
        self,
        channel_id: int | str,
        *,
        before: int | str | None = None,
        after: int | str | None = None,
        limit: int = PAGE_SIZE,
    ) -> list[dict[str, Any]]: ...


@dataclass
class ChannelResult:
    """What one channel's sync did."""

    channel_id: str
    new: int = 0
    edited: int = 0
    deleted: int = 0
    no_access: bool = False
    content_intent_missing: bool = False

    def add(self, page: PageResult) -> None:
        self.new += len(page.new)
        self.edited += len(page.edited)


class HistorySync:
    """Syncs channels one at a time; safe to kill at any moment."""

    def __init__(
        self,
        source: MessageSource,
        store: Store,
        *,
        bot_user_id: str | None,
        recheck_seconds: float,
        clock: Callable[[], float] = time.time,
        on_page: Callable[[int], None] | None = None,
    ) -> None:
        self._source = source
        self._store = store
        self._bot_user_id = bot_user_id
        self._recheck_seconds = recheck_seconds
        self._clock = clock
        self._on_page = on_page or (lambda count: None)

    async def sync_channel(self, channel: ChannelRecord) -> ChannelResult:
        """Bring one channel up to date; a channel the bot cannot read is marked so."""
        result = ChannelResult(channel.id)
        try:
            state = await self._store.channel_state(channel.id)
            backfilling = state is None or not state.backfill_complete
            if backfilling:
                await self._backfill(channel, result)
            await self._forward(channel, result)
            await self._refetch(channel, result)
            # A backfill that just read everything leaves nothing to recheck.
            if self._recheck_seconds > 0 and not backfilling:
                await self._recheck(channel, result)
        except (DiscordForbidden, DiscordNotFound) as exc:
            logger.warning(
                "no access to channel %s (#%s): %s; skipping it", channel.id, channel.name, exc
            )
            await self._store.set_channel_access(channel.id, ChannelAccess.NO_ACCESS)
            result.no_access = True
            return result
        await self._store.set_channel_access(channel.id, ChannelAccess.OK)
        return result

    async def _backfill(self, channel: ChannelRecord, result: ChannelResult) -> None:
        state = await self._store.channel_state(channel.id)
        before = state.backfill_before_id if state else None
        newest = state.newest_synced_id if state else None
        while True:
            page = await self._fetch(channel, result, before=before)
            ids = [int(m["id"]) for m in page]
            complete = len(page) < PAGE_SIZE
            if newest is None and ids:
                newest = max(ids)
            oldest = min(ids) if ids else before
            saved = await self._store.save_page(
                channel.id,
                self._convert(page, channel),
                newest_id=newest,
                backfill_before=oldest,
                backfill_complete=complete,
            )
            result.add(saved)
            self._on_page(len(page))
            if complete:
                return
            before = oldest

    async def _forward(self, channel: ChannelRecord, result: ChannelResult) -> None:
        state = await self._store.channel_state(channel.id)
        after = state.newest_synced_id if state and state.newest_synced_id else 0
        while True:
            page = await self._fetch(channel, result, after=after)
            if not page:
                return
            newest = max(int(m["id"]) for m in page)
            saved = await self._store.save_page(
                channel.id, self._convert(page, channel), newest_id=newest
            )
            result.add(saved)
            self._on_page(len(page))
            if len(page) < PAGE_SIZE:
                return
            after = newest

    async def _refetch(self, channel: ChannelRecord, result: ChannelResult) -> None:
        """Read again the span of messages whose authors opted back in (app.store.privacy).

        Pages with `after=` from the span's cursor, which moves in each page's transaction;
        the span is read again after each page, so one an opt-in widened meanwhile is walked
        from its new start.
        """
        span = await self._store.refetch_span(channel.id)
        while span is not None:
            page = await self._fetch(channel, result, after=span.after_id)
            ids = [int(m["id"]) for m in page]
            through = max(ids, default=span.until_id)
            if len(page) < PAGE_SIZE or through >= span.until_id:
                through = span.until_id
            within = [m for m in page if int(m["id"]) <= span.until_id]
            saved = await self._store.save_refetched_page(
                channel.id, self._convert(within, channel), span, through
            )
            result.add(saved)
            self._on_page(len(page))
            span = await self._store.refetch_span(channel.id)

    async def _recheck(self, channel: ChannelRecord, result: ChannelResult) -> None:
        floor = time_snowflake(self._clock() - self._recheck_seconds)
        seen: set[int] = set()
        before: int | None = None
        while True:
            page = await self._fetch(channel, result, before=before)
            ids = [int(m["id"]) for m in page]
            window = [m for m in page if int(m["id"]) >= floor]
            seen.update(int(m["id"]) for m in window)
            if window:
                result.add(await self._store.save_page(channel.id, self._convert(window, channel)))
            if len(page) < PAGE_SIZE or min(ids) < floor:
                break
            before = min(ids)
        # Every stored id was written before the first page above was read, so an id
        # in the window that the pages no longer hold was deleted on Discord.
        stored = await self._store.live_ids_since(channel.id, floor - 1)
        vanished = [i for i in stored if i not in seen]
        if vanished:
            await self._store.mark_deleted(channel.id, vanished)
            result.deleted += len(vanished)

    async def _fetch(
        self,
        channel: ChannelRecord,
        result: ChannelResult,
        *,
        before: int | None = None,
        after: int | None = None,
    ) -> list[dict[str, Any]]:
        page = await self._source.get_channel_messages(
            channel.id, before=before, after=after, limit=PAGE_SIZE
        )
        if not result.content_intent_missing and _content_withheld(page):
            result.content_intent_missing = True
            logger.error(
                "messages in #%s arrive without text: enable the MESSAGE CONTENT intent "
                "for the bot in the Discord developer portal (Bot > Privileged Gateway Intents)",
                channel.name,
            )
        return page

    def _convert(
        self, page: Iterable[dict[str, Any]], channel: ChannelRecord
    ) -> list[StoredMessage]:
        # The bot's own answers are never stored: they would be quoted back as sources.
        return [
            message_from_discord(m, channel.guild_id)
            for m in page
            if (m.get("author") or {}).get("id") != self._bot_user_id
        ]


def _content_withheld(page: list[dict[str, Any]]) -> bool:
    users = [
        m
        for m in page
        if not (m.get("author") or {}).get("bot")
        and m.get("type", MESSAGE_DEFAULT) in (MESSAGE_DEFAULT, MESSAGE_REPLY)
    ]
    return len(users) >= _INTENT_EVIDENCE and all(
        not m.get("content") and not m.get("attachments") and not m.get("embeds") for m in users
    )
