"""A slash-command invocation as the worker sees it: who asked what, where."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.discord.snowflakes import snowflake_time
from app.errors import BotError
from app.interactions.models import SNOWFLAKE, option_values, parse_permissions


class InvalidInvocation(BotError):
    """A queued interaction lacks what the worker needs to answer it."""


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
        )
