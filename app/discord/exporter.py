"""Reading DiscordChatExporter JSON exports (`--format Json`) into store records.

The export is one object: `guild` {id, name}, `channel` {id, type, categoryId, category, name,
topic}, `dateRange`, `exportedAt`, `messages` [...], `messageCount`. Channel and message kinds
are the names of Discord's enums ("GuildTextChat", "Reply"); for a thread, `categoryId` is the
parent channel. The file is read as a stream, one message object at a time, so a large export
never exists as one JSON tree in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from app.discord.payloads import embed_from_payload
from app.errors import BotError
from app.store.models import (
    MESSAGE_DEFAULT,
    MESSAGE_REPLY,
    Attachment,
    ChannelRecord,
    StoredMessage,
    parse_time,
)

logger = logging.getLogger(__name__)


class ExportError(BotError):
    """A file is not a readable DiscordChatExporter JSON export; the message says why."""


# DiscordChatExporter's ChannelKind names and Discord's numbers for them.
CHANNEL_KINDS = {
    "GuildTextChat": 0,
    "DirectTextChat": 1,
    "GuildVoiceChat": 2,
    "DirectGroupTextChat": 3,
    "GuildCategory": 4,
    "GuildNews": 5,
    "GuildNewsThread": 10,
    "GuildPublicThread": 11,
    "GuildPrivateThread": 12,
    "GuildStageVoice": 13,
    "GuildDirectory": 14,
    "GuildForum": 15,
}
# DiscordChatExporter's MessageKind names and Discord's numbers for them.
MESSAGE_KINDS = {
    "Default": 0,
    "RecipientAdd": 1,
    "RecipientRemove": 2,
    "Call": 3,
    "ChannelNameChange": 4,
    "ChannelIconChange": 5,
    "ChannelPinnedMessage": 6,
    "GuildMemberJoin": 7,
    "ThreadCreated": 18,
    "Reply": 19,
}
# Direct-message exports carry this pseudo guild id.
_NO_GUILD = "0"
_READ_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class Export:
    """One parsed export: its guild, its channel and its messages in file order."""

    guild_id: str | None
    channel: ChannelRecord
    messages: list[StoredMessage]

    def pages(self, size: int = 100) -> Iterator[list[StoredMessage]]:
        """The messages in slices of `size`, for `Store.save_page`."""
        for start in range(0, len(self.messages), size):
            yield self.messages[start : start + size]


def parse_export(path: Path, *, read_size: int = _READ_SIZE) -> Export:
    """Parse a DiscordChatExporter JSON export (read `read_size` characters at a time)."""
    try:
        with path.open("r", encoding="utf-8") as handle:
            return _parse(_JsonStream(handle, read_size), path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: cannot read the export ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not a DiscordChatExporter JSON export ({exc})") from None


def message_from_export(
    payload: Mapping[str, Any], channel_id: str, guild_id: str | None
) -> StoredMessage:
    """One message object of an export."""
    author = payload["author"]
    kind = str(payload.get("type") or "Default")
    message_type = MESSAGE_KINDS.get(kind, MESSAGE_DEFAULT)
    reference = payload.get("reference") or {}
    reply_to = reference.get("messageId") if message_type == MESSAGE_REPLY else None
    edited = payload.get("timestampEdited")
    return StoredMessage(
        id=int(payload["id"]),
        channel_id=channel_id,
        guild_id=guild_id,
        author_id=str(author["id"]),
        author_name=str(author.get("nickname") or author.get("name") or ""),
        author_is_bot=bool(author.get("isBot", False)),
        content=str(payload.get("content") or ""),
        timestamp=parse_time(payload["timestamp"]),
        edited=edited is not None,
        edited_at=parse_time(edited) if edited else None,
        message_type=message_type,
        reply_to_id=int(reply_to) if reply_to else None,
        attachments=tuple(
            Attachment(
                id=str(a["id"]),
                filename=str(a.get("fileName") or ""),
                url=str(a.get("url") or ""),
                size=int(a.get("fileSizeBytes") or 0),
            )
            for a in payload.get("attachments") or ()
        ),
        embeds=tuple(embed_from_payload(e) for e in payload.get("embeds") or ()),
    )


def _parse(stream: _JsonStream, path: Path) -> Export:
    header: dict[str, Any] = {}
    raw_messages: list[Mapping[str, Any]] = []
    messages: list[StoredMessage] = []
    stream.expect("{")
    while stream.peek() != "}":
        key = stream.value()
        if not isinstance(key, str):
            raise ExportError(f"{path}: not a DiscordChatExporter JSON export (bad key)")
        stream.expect(":")
        if key != "messages":
            header[key] = stream.value()
        else:
            for item in stream.array():
                if "channel" in header and "guild" in header:
                    messages.append(_message(item, header, path, len(messages)))
                else:  # only if guild and channel come after the messages
                    raw_messages.append(item)
        if not stream.next_member():
            break
    stream.expect("}")
    if not isinstance(header.get("guild"), dict) or not isinstance(header.get("channel"), dict):
        raise ExportError(f"{path}: not a DiscordChatExporter JSON export (no guild or channel)")
    messages.extend(_message(item, header, path, i) for i, item in enumerate(raw_messages))
    guild_id = _guild_id(header)
    channel = _channel(header["channel"], guild_id, path)
    declared = header.get("messageCount")
    if isinstance(declared, int) and declared != len(messages):
        logger.warning("export %s declares %d messages but holds %d", path, declared, len(messages))
    return Export(guild_id=guild_id, channel=channel, messages=messages)


def _guild_id(header: Mapping[str, Any]) -> str | None:
    guild_id = str(header["guild"].get("id") or _NO_GUILD)
    return None if guild_id == _NO_GUILD else guild_id


def _channel(payload: Mapping[str, Any], guild_id: str | None, path: Path) -> ChannelRecord:
    try:
        kind = str(payload.get("type") or "GuildTextChat")
        return ChannelRecord(
            id=str(int(payload["id"])),
            guild_id=guild_id,
            name=str(payload.get("name") or ""),
            type=CHANNEL_KINDS.get(kind, 0),
            parent_id=str(payload["categoryId"]) if payload.get("categoryId") else None,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ExportError(f"{path}: the channel object is malformed ({exc!r})") from None


def _message(item: Any, header: Mapping[str, Any], path: Path, index: int) -> StoredMessage:
    try:
        return message_from_export(item, str(int(header["channel"]["id"])), _guild_id(header))
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ExportError(f"{path}: message #{index} is malformed ({exc!r})") from None


class _JsonStream:
    """Just enough of an incremental JSON reader to walk one object and one array in it."""

    def __init__(self, handle: IO[str], read_size: int) -> None:
        self._handle = handle
        self._read_size = read_size
        self._decoder = json.JSONDecoder()
        self._buffer = ""
        self._pos = 0
        self._eof = False

    def peek(self) -> str:
        """The next character that is not white space ("" at the end of the file)."""
        while True:
            while self._pos < len(self._buffer) and self._buffer[self._pos] in " \t\r\n":
                self._pos += 1
            if self._pos < len(self._buffer):
                return self._buffer[self._pos]
            if not self._fill():
                return ""

    def expect(self, char: str) -> None:
        """Consume `char` or fail."""
        if self.peek() != char:
            raise json.JSONDecodeError(f"expected {char!r}", self._buffer, self._pos)
        self._pos += 1

    def next_member(self) -> bool:
        """After a member of an object or array: consume a comma (True) or stop (False)."""
        if self.peek() == ",":
            self._pos += 1
            return True
        return False

    def value(self) -> Any:
        """Decode the next complete JSON value."""
        self.peek()
        while True:
            try:
                value, end = self._decoder.raw_decode(self._buffer, self._pos)
            except json.JSONDecodeError:
                if self._fill():
                    continue
                raise
            # A number that ends the buffer may continue in the next read.
            if end == len(self._buffer) and self._fill():
                continue
            self._pos = end
            return value

    def array(self) -> Iterator[Any]:
        """The elements of the array that starts here, one at a time."""
        self.expect("[")
        if self.peek() == "]":
            self._pos += 1
            return
        while True:
            yield self.value()
            if not self.next_member():
                break
        self.expect("]")

    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._handle.read(self._read_size)
        if not data:
            self._eof = True
            return False
        self._buffer = self._buffer[self._pos :] + data
        self._pos = 0
        return True
