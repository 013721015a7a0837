"""The store's values: messages, channels, roles, sync state and audit entries.

These are plain frozen dataclasses with no knowledge of SQL or of Discord's payloads: the
`app.store` query modules map them to rows, and `app.discord.payloads` and
`app.discord.exporter` build them from what Discord or an export says.

A message as text is `StoredMessage.index_text`: the content, then one line per attachment
(`[photo: ALT TEXT]`, or `[attachment: NAME]` when it has no alt text) and the title and
description of each embed: what people ask about includes what they showed, not only what
they typed. What gets embedded is `search_text`, the same prefixed with the author's name
("Dana: ..."), since questions name people. `StoredMessage.content_hash` is the SHA-256 of
`index_text`, so a message whose text is unchanged is never embedded again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import NamedTuple

# Discord channel types (https://discord.com/developers/docs/resources/channel#channel-object).
GUILD_TEXT = 0
GUILD_CATEGORY = 4
GUILD_ANNOUNCEMENT = 5
ANNOUNCEMENT_THREAD = 10
PUBLIC_THREAD = 11
PRIVATE_THREAD = 12
GUILD_FORUM = 15
THREAD_TYPES = frozenset({ANNOUNCEMENT_THREAD, PUBLIC_THREAD, PRIVATE_THREAD})

# Discord message types the parsers tell apart; every other type is kept as its number.
MESSAGE_DEFAULT = 0
MESSAGE_REPLY = 19


class IndexState(StrEnum):
    """Where a message stands with the vector index (the outbox column)."""

    PENDING = "pending"
    INDEXED = "indexed"
    PENDING_REMOVAL = "pending_removal"
    REMOVED = "removed"


class ChannelAccess(StrEnum):
    """Whether the bot could read a channel on its last attempt."""

    OK = "ok"
    NO_ACCESS = "no_access"
    # Known only from an import: its permission overwrites have never been read.
    UNVERIFIED = "unverified"


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file attached to a message."""

    id: str
    filename: str
    url: str = ""
    content_type: str | None = None
    size: int = 0
    # Alt text: Discord carries it in the attachment's `description`.
    description: str = ""

    @property
    def is_image(self) -> bool:
        """Whether the file is a picture (by its type, or by its name when untyped)."""
        if self.content_type:
            return self.content_type.startswith("image/")
        return self.filename.lower().endswith((".png", ".jpg", ".jpeg", ".gif", ".webp"))

    @property
    def as_text(self) -> str:
        """How the attachment reads in text: its alt text, or its kind and file name."""
        kind = "photo" if self.is_image else "attachment"
        described = " ".join(self.description.split())
        return f"[{kind}: {described or self.filename}]"


@dataclass(frozen=True, slots=True)
class Embed:
    """The searchable part of a rich embed."""

    title: str = ""
    description: str = ""
    url: str | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message row; Discord ids are str except the message's own ids, which are int."""

    id: int
    channel_id: str
    author_id: str
    content: str
    timestamp: datetime
    guild_id: str | None = None
    author_name: str = ""
    author_is_bot: bool = False
    edited: bool = False
    edited_at: datetime | None = None
    deleted: bool = False
    message_type: int = MESSAGE_DEFAULT
    reply_to_id: int | None = None
    attachments: tuple[Attachment, ...] = ()
    embeds: tuple[Embed, ...] = ()
    index_state: IndexState = IndexState.PENDING
    # Its author opted out (app.store.privacy): the row keeps its place, without any text.
    withheld: bool = False

    @property
    def extra_text(self) -> str:
        """What the message shows besides its content: attachments and embeds, one per line."""
        lines = [a.as_text for a in self.attachments]
        for embed in self.embeds:
            lines.extend(part for part in (embed.title, embed.description) if part.strip())
        return "\n".join(lines)

    @property
    def index_text(self) -> str:
        """The message as text: its content, then its attachments and embeds."""
        parts = [self.content] if self.content.strip() else []
        extra = self.extra_text
        if extra:
            parts.append(extra)
        return "\n".join(parts)

    @property
    def search_text(self) -> str:
        """What gets embedded and quoted as context: "author: text", on one line."""
        text = " ".join(self.index_text.split())
        return f"{self.author_name}: {text}" if self.author_name else text

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex) of `index_text`."""
        return hashlib.sha256(self.index_text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class PermissionOverwrite:
    """A channel's allow/deny bits for one role (type 0) or member (type 1)."""

    id: str
    type: int
    allow: int
    deny: int


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    """A guild channel or thread as Discord describes it (no sync state)."""

    id: str
    guild_id: str | None
    name: str
    type: int = GUILD_TEXT
    parent_id: str | None = None
    position: int = 0
    permission_overwrites: tuple[PermissionOverwrite, ...] = ()

    @property
    def is_thread(self) -> bool:
        """Whether this is a thread (its permissions come from `parent_id`)."""
        return self.type in THREAD_TYPES


@dataclass(frozen=True, slots=True)
class ChannelState:
    """A channel's sync cursor and access status."""

    channel_id: str
    newest_synced_id: int | None = None
    backfill_before_id: int | None = None
    backfill_complete: bool = False
    last_synced_at: datetime | None = None
    access: ChannelAccess = ChannelAccess.OK


@dataclass(frozen=True, slots=True)
class RoleRecord:
    """A guild role; `permissions` is Discord's bit set."""

    id: str
    guild_id: str
    name: str
    permissions: int
    position: int = 0


@dataclass(frozen=True, slots=True)
class PageResult:
    """What `Store.save_page` did with each message id of a page."""

    new: tuple[int, ...] = ()
    edited: tuple[int, ...] = ()
    unchanged: tuple[int, ...] = ()

    @property
    def changed(self) -> tuple[int, ...]:
        """Ids written by this page (new or edited)."""
        return self.new + self.edited


class AuthorCount(NamedTuple):
    """One row of the top authors of a channel."""

    author_id: str
    name: str
    message_count: int


class WeekCount(NamedTuple):
    """Live messages of the week (UTC) that starts on `week`, a Monday."""

    week: date
    message_count: int


@dataclass(frozen=True, slots=True)
class Stats:
    """Live message count, date range and top authors of some channels."""

    count: int
    first: datetime | None
    last: datetime | None
    top_authors: tuple[AuthorCount, ...] = ()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who ran which command where, when, how it ended and how long the user waited."""

    interaction_id: str
    at: datetime
    guild_id: str | None
    channel_id: str
    user_id: str
    command: str
    outcome: str
    # From the interaction's creation at Discord until the answer was sent.
    latency_ms: int


def parse_time(value: str) -> datetime:
    """An ISO 8601 time from Discord or an export, as an aware UTC datetime."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """The fixed-width UTC text under which times are stored (sorts like the times)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")
