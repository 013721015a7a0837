"""Store records from Discord REST payloads: messages, embeds, channels and roles.

Discord is a source of messages, not storage, so these parsers live beside the REST client and
the export reader rather than in `app.store`: they turn what `GET /channels/{id}/messages`,
`GET /guilds/{id}/channels` and `GET /guilds/{id}/roles` return into the store's dataclasses.
Discord ids become str, except a message's own ids, which become int (see `StoredMessage`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.store.models import (
    GUILD_TEXT,
    MESSAGE_DEFAULT,
    MESSAGE_REPLY,
    Attachment,
    ChannelRecord,
    Embed,
    PermissionOverwrite,
    RoleRecord,
    StoredMessage,
    parse_time,
)


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
                description=str(a.get("description") or ""),
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
