"""The store's values (messages, channels, roles) and their parsers from Discord payloads.

What gets embedded for a message is `StoredMessage.index_text`: the message content, or, when
the content is empty or blank (an image post, a link preview, a bot's embed), one line per
attachment (`[attachment: NAME]`) followed by the title and description of each embed.
`StoredMessage.content_hash` is the SHA-256 of that text, so a message whose embedded text is
unchanged is never embedded again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

# Discord channel types (https://discord.com/developers/docs/resources/channel#channel-object).
GUILD_TEXT = 0
GUILD_CATEGORY = 4
GUILD_ANNOUNCEMENT = 5
ANNOUNCEMENT_THREAD = 10
PUBLIC_THREAD = 11
PRIVATE_THREAD = 12
GUILD_FORUM = 15
THREAD_TYPES = frozenset({ANNOUNCEMENT_THREAD, PUBLIC_THREAD, PRIVATE_THREAD})

# Discord message types used by the parsers; every other type is kept as its number.
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

    @property
    def index_text(self) -> str:
        """The text that gets embedded (see the module docstring)."""
        if self.content.strip():
            return self.content
        lines = [f"[attachment: {a.filename}]" for a in self.attachments]
        for embed in self.embeds:
            lines.extend(part for part in (embed.title, embed.description) if part.strip())
        return "\n".join(lines)

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


@dataclass(frozen=True, slots=True)
class Stats:
    """Live message count, date range and top authors of some channels."""

    count: int
    first: datetime | None
    last: datetime | None
    top_authors: tuple[AuthorCount, ...] = ()


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


def message_from_discord(payload: Mapping[str, Any], guild_id: str | None) -> StoredMessage:
    """A message object from Discord REST (`GET /channels/{id}/messages`)."""
    author = payload.get("author") or {}
    reference = payload.get("message_reference") or {}
    edited = payload.get("edited_timestamp")
    message_type = int(payload.get("type", MESSAGE_DEFAULT))
    reply_to = reference.get("message_id") if message_type == MESSAGE_REPLY else None
    return StoredMessage(
        id=int(payload["id"]),
        channel_id=str(payload["channel_id"]),
        guild_id=guild_id if guild_id is not None else _opt_str(payload.get("guild_id")),
        author_id=str(author["id"]),
        author_name=str(author.get("global_name") or author.get("username") or ""),
        author_is_bot=bool(author.get("bot", False)),
        content=str(payload.get("content") or ""),
        timestamp=parse_time(payload["timestamp"]),
        edited=edited is not None,
        edited_at=parse_time(edited) if edited else None,
        message_type=message_type,
        reply_to_id=int(reply_to) if reply_to else None,
        attachments=tuple(
            Attachment(
                id=str(a["id"]),
                filename=str(a.get("filename", "")),
                url=str(a.get("url", "")),
                content_type=_opt_str(a.get("content_type")),
                size=int(a.get("size", 0)),
            )
            for a in payload.get("attachments") or ()
        ),
        embeds=tuple(embed_from_payload(e) for e in payload.get("embeds") or ()),
    )


def embed_from_payload(payload: Mapping[str, Any]) -> Embed:
    """The searchable fields of an embed (REST and export share these names)."""
    return Embed(
        title=str(payload.get("title") or ""),
        description=str(payload.get("description") or ""),
        url=_opt_str(payload.get("url")),
    )


def channel_from_discord(payload: Mapping[str, Any]) -> ChannelRecord:
    """A channel or thread object from Discord REST."""
    return ChannelRecord(
        id=str(payload["id"]),
        guild_id=_opt_str(payload.get("guild_id")),
        name=str(payload.get("name") or ""),
        type=int(payload.get("type", GUILD_TEXT)),
        parent_id=_opt_str(payload.get("parent_id")),
        position=int(payload.get("position") or 0),
        permission_overwrites=tuple(
            PermissionOverwrite(
                id=str(o["id"]),
                type=int(o["type"]),
                allow=int(o.get("allow") or 0),
                deny=int(o.get("deny") or 0),
            )
            for o in payload.get("permission_overwrites") or ()
        ),
    )


def role_from_discord(payload: Mapping[str, Any], guild_id: str) -> RoleRecord:
    """A role object from Discord REST (`GET /guilds/{id}/roles`)."""
    return RoleRecord(
        id=str(payload["id"]),
        guild_id=guild_id,
        name=str(payload.get("name") or ""),
        permissions=int(payload.get("permissions") or 0),
        position=int(payload.get("position") or 0),
    )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)
