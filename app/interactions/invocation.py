"""A command invocation as the worker sees it: who asked what, where, about which message."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.discord.snowflakes import snowflake_time
from app.errors import BotError
from app.interactions.commands import MESSAGE
from app.interactions.models import SNOWFLAKE, option_values, parse_permissions


class InvalidInvocation(BotError):
    """A queued interaction lacks what the worker needs to answer it."""


@dataclass(frozen=True, slots=True)
class TargetMessage:
    """The message a context-menu command was run on, as Discord resolved it.

    Its content is what Discord showed the member; handlers prefer the stored copy,
    which is what the privacy rules have been applied to.
    """

    id: int
    channel_id: str
    content: str = field(default="", repr=False)
    author_id: str | None = None
    timestamp: datetime | None = None

    @classmethod
    def from_data(cls, data: dict[str, Any], channel_id: str) -> TargetMessage:
        """Read `data.target_id` and `data.resolved.messages`; raise InvalidInvocation."""
        target_id = data.get("target_id")
        if not isinstance(target_id, str) or not SNOWFLAKE.fullmatch(target_id):
            raise InvalidInvocation("message command has no target_id snowflake")
        resolved = data.get("resolved")
        messages = resolved.get("messages") if isinstance(resolved, dict) else None
        message = messages.get(target_id) if isinstance(messages, dict) else None
        if not isinstance(message, dict) or message.get("id") != target_id:
            raise InvalidInvocation("message command lacks its resolved target message")
        # The menu is opened on a message of the invoking channel; any other channel
        # could be one the member cannot read.
        if message.get("channel_id") != channel_id:
            raise InvalidInvocation("target message is not in the interaction's channel")
        author = message.get("author")
        author_id = author.get("id") if isinstance(author, dict) else None
        content = message.get("content")
        return cls(
            id=int(target_id),
            channel_id=channel_id,
            content=content if isinstance(content, str) else "",
            author_id=author_id if isinstance(author_id, str) else None,
            timestamp=_time(message.get("timestamp")),
        )


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Invocation:
    """The fields of a command interaction that handlers use."""

    id: str
    application_id: str
    token: str = field(repr=False)
    command: str
    options: dict[str, Any]
    guild_id: str | None
    channel_id: str
    user_id: str
    user_name: str
    member_roles: tuple[str, ...]
    # The member's permissions in the invoking channel as Discord computed them;
    # None when not known (a question asked from the terminal).
    permissions: int | None
    # The message a context-menu command was run on; None for slash commands.
    target: TargetMessage | None = None

    @property
    def created_at(self) -> float:
        """Unix time at which Discord created the interaction (its token's birth)."""
        return snowflake_time(self.id)

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Invocation:
        """Read a queued interaction dict; raise InvalidInvocation when fields are missing."""
        data = raw.get("data")
        data = data if isinstance(data, dict) else {}
        member = raw.get("member") if isinstance(raw.get("member"), dict) else None
        user = (member or {}).get("user") if member else raw.get("user")
        user = user if isinstance(user, dict) else {}
        channel = raw.get("channel")
        channel_id = raw.get("channel_id") or (
            channel.get("id") if isinstance(channel, dict) else None
        )
        found = {
            "id": raw.get("id"),
            "application_id": raw.get("application_id"),
            "token": raw.get("token"),
            "command": data.get("name"),
            "channel_id": channel_id,
            "user_id": user.get("id"),
        }
        values = {k: v for k, v in found.items() if isinstance(v, str) and v}
        missing = [k for k in found if k not in values]
        if missing:
            raise InvalidInvocation(f"interaction lacks {', '.join(missing)}")
        # The id dates the interaction (its token's age), so it must be a real snowflake.
        if not SNOWFLAKE.fullmatch(values["id"]):
            raise InvalidInvocation("interaction id is not a snowflake")
        permissions = (member or {}).get("permissions")
        roles = (member or {}).get("roles")
        roles = roles if isinstance(roles, list) else []
        kind = data.get("type")
        is_message_command = type(kind) is int and kind == MESSAGE
        target = TargetMessage.from_data(data, values["channel_id"]) if is_message_command else None
        return cls(
            id=values["id"],
            application_id=values["application_id"],
            token=values["token"],
            command=values["command"],
            options=option_values(data.get("options")),
            guild_id=raw.get("guild_id") if isinstance(raw.get("guild_id"), str) else None,
            channel_id=values["channel_id"],
            user_id=values["user_id"],
            user_name=str(
                (member or {}).get("nick") or user.get("global_name") or user.get("username") or ""
            ),
            member_roles=tuple(r for r in roles if isinstance(r, str)),
            permissions=parse_permissions(str(permissions)),
            target=target,
        )
