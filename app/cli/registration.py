"""Registering the slash commands with Discord: one bulk overwrite, globally or per guild."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from app.discord import permissions
from app.discord.rest import DiscordRest, JSONObject
from app.interactions.commands import MESSAGE

logger = logging.getLogger(__name__)


async def register_commands(
    rest: DiscordRest,
    application_id: int | str,
    commands: Sequence[Mapping[str, Any]],
    guild_id: int | str | None = None,
) -> list[JSONObject]:
    """Replace the application's commands with `commands`; return what Discord stored.

    Global commands reach every guild the application is installed in; guild
    commands update at once and suit testing on one server.
    """
    wire = [_for_request(command) for command in commands]
    registered = await rest.bulk_overwrite_commands(application_id, wire, guild_id)
    logger.info(
        "Registered %d commands %s",
        len(registered),
        "globally" if guild_id is None else f"in guild {guild_id}",
    )
    return registered


def _for_request(command: Mapping[str, Any]) -> dict[str, Any]:
    """The command as Discord's request schema types it.

    Discord answers `default_member_permissions` as a decimal string but its
    request schema takes an integer; the definitions use Discord's string form.
    """
    wire = dict(command)
    permissions = wire.get("default_member_permissions")
    if isinstance(permissions, str):
        wire["default_member_permissions"] = int(permissions)
    return wire


def format_registered(commands: Sequence[Mapping[str, Any]]) -> str:
    """One line per command: name, options (required ones starred), who may use it."""
    return "\n".join(_format_command(c) for c in commands)


def _format_command(command: Mapping[str, Any]) -> str:
    options = [
        f"{o['name']}{'*' if o.get('required') else ''}" for o in command.get("options") or []
    ]
    # Context-menu commands are shown by name: they appear in a message's Apps menu.
    name = (
        f'"{command["name"]}" (message menu)'
        if command.get("type") == MESSAGE
        else f"/{command['name']}"
    )
    return (
        f"{name}  id={command.get('id', '?')}  "
        f"options: {', '.join(options) or 'none'}  "
        f"permissions: {_format_permissions(command.get('default_member_permissions'))}"
    )


def _format_permissions(value: str | None) -> str:
    if value is None:
        return "everyone"
    bits = int(value)
    if bits == 0:
        return "administrators only"
    names = [name for bit, name in permissions.NAMES.items() if bits & bit]
    rest = bits & ~sum(bit for bit in permissions.NAMES if bits & bit)
    if rest:
        names.append(str(rest))
    return "|".join(names)
