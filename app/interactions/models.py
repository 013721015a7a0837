"""The parts of an interaction the front door reads, and checks of command options."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from app.discord.permissions import ADMINISTRATOR
from app.errors import BotError
from app.interactions.commands import (
    CHAT_INPUT,
    COMMANDS,
    MESSAGE,
    OPTION_CHANNEL,
    OPTION_INTEGER,
    OPTION_STRING,
    OPTION_USER,
)
from app.retrieval.query import parse_when

# Discord's interaction types.
PING: Final = 1
APPLICATION_COMMAND: Final = 2

# Options read as times: /search's after and before, /summarize's since (see parse_when).
_WHEN_OPTIONS: Final = frozenset({"after", "before", "since"})
# Discord ids are unsigned 64-bit integers sent as decimal strings.
SNOWFLAKE: Final = re.compile(r"[0-9]{1,20}")
# Permission bit sets are decimal strings too; the cap keeps int() cheap.
_PERMISSIONS: Final = re.compile(r"[0-9]{1,40}")
# Discord's deepest payloads (resolved messages, nested subcommand options)
# stay far below this; deeper ones could not even be pickled onto the queue.
MAX_DEPTH: Final = 32
# Names echoed back in a reply are cut to Discord's longest command or option name.
NAME_SHOWN_MAX: Final = 32

__all__ = ["APPLICATION_COMMAND", "PING", "Interaction"]


class MalformedInteraction(BotError):
    """A correctly signed body that is not an interaction we can read."""


@dataclass(slots=True)
class Interaction:
    """One parsed interaction; `raw` is the whole dict, handed on to the worker untouched.

    Not frozen: a frozen dataclass costs a microsecond per request to build, on the path
    every PING takes. Nothing changes one after parsing.
    """

    type: int
    id: str | None
    raw: dict[str, Any] = field(repr=False)
    command: str | None = None
    # The command's kind (`data.type`): a slash command, or a message context-menu command.
    command_type: int = CHAT_INPUT
    options: dict[str, Any] = field(default_factory=dict)
    user_id: str | None = None
    permissions: int = 0

    def has_permission(self, bit: int) -> bool:
        """Whether the invoking member holds `bit`, administrators holding every bit."""
        return bool(self.permissions & (bit | ADMINISTRATOR))


def parse_interaction(body: bytes) -> Interaction:
    """Read a verified body; raise MalformedInteraction when it is not an interaction."""
    try:
        # orjson reads a small body in a tenth of the standard module's time, and refuses
        # what is not strict JSON: invalid UTF-8, NaN, lone surrogates, over 1024 levels.
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit"):
            raise MalformedInteraction("body is nested too deeply") from None
        raise MalformedInteraction("body is not JSON") from None
    if not isinstance(raw, dict):
        raise MalformedInteraction("body is not a JSON object")
    kind = raw.get("type")
    if type(kind) is not int:
        raise MalformedInteraction("interaction has no integer type")
    interaction_id = raw.get("id")
    if interaction_id is not None and not isinstance(interaction_id, str):
        raise MalformedInteraction("interaction id is not a string")
    if interaction_id is not None and not SNOWFLAKE.fullmatch(interaction_id):
        raise MalformedInteraction("interaction id is not a snowflake")
    if kind != APPLICATION_COMMAND:
        return Interaction(type=kind, id=interaction_id, raw=raw)
    if interaction_id is None:
        raise MalformedInteraction("command interaction has no id")
    # Each level opens a bracket, so a body with few brackets needs no walk (most of them).
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and not _within_depth(raw, MAX_DEPTH):
        raise MalformedInteraction(f"command interaction is nested deeper than {MAX_DEPTH}")
    data = raw.get("data")
    data = data if isinstance(data, dict) else {}
    name = data.get("name")
    # Discord always sends data.type; without it the command is taken as a slash command.
    command_type = data.get("type", CHAT_INPUT)
    return Interaction(
        type=kind,
        id=interaction_id,
        raw=raw,
        command=name if isinstance(name, str) else None,
        command_type=command_type if type(command_type) is int else 0,
        options=option_values(data.get("options")),
        user_id=_user_id(raw),
        permissions=_permissions(raw),
    )


def _within_depth(value: Any, limit: int) -> bool:
    """Whether no container in `value` lies deeper than `limit` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return True


def option_values(value: Any) -> dict[str, Any]:
    """A command's `data.options` list as name -> value (anything malformed is skipped)."""
    if not isinstance(value, list):
        return {}
    return {
        o["name"]: o.get("value")
        for o in value
        if isinstance(o, dict) and isinstance(o.get("name"), str)
    }


def _user_id(raw: dict[str, Any]) -> str | None:
    member = raw.get("member")
    user = member.get("user") if isinstance(member, dict) else raw.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    return user_id if isinstance(user_id, str) else None


def _permissions(raw: dict[str, Any]) -> int:
    member = raw.get("member")
    # Discord sends the bit set as a decimal string; anything else grants nothing.
    value = parse_permissions(member.get("permissions") if isinstance(member, dict) else None)
    return value if value is not None else 0


def parse_permissions(value: Any) -> int | None:
    """A decimal permission bit set as an int, or None when it is not one."""
    if isinstance(value, str) and _PERMISSIONS.fullmatch(value):
        return int(value)
    return None


def shown_name(name: str) -> str:
    """A name from the request, cut short enough to quote in a reply."""
    return name if len(name) <= NAME_SHOWN_MAX else name[:NAME_SHOWN_MAX] + "…"


def command_label(name: str, command_type: int) -> str:
    """A command as members see it: `/ask`, or "Find related" for a context-menu command."""
    return f"“{name}”" if command_type == MESSAGE else f"/{name}"


@dataclass(frozen=True, slots=True)
class _OptionRule:
    name: str
    kind: int
    required: bool
    choices: frozenset[Any] | None
    min_value: int | None
    max_value: int | None
    min_length: int | None
    max_length: int | None


def _rules() -> dict[str, dict[str, _OptionRule]]:
    rules: dict[str, dict[str, _OptionRule]] = {}
    for command in COMMANDS:
        rules[command["name"]] = {
            o["name"]: _OptionRule(
                name=o["name"],
                kind=o["type"],
                required=bool(o.get("required")),
                choices=frozenset(c["value"] for c in o["choices"]) if "choices" in o else None,
                min_value=o.get("min_value"),
                max_value=o.get("max_value"),
                min_length=o.get("min_length"),
                max_length=o.get("max_length"),
            )
            # Context-menu commands have no options at all.
            for o in command.get("options", [])
        }
    return rules


class OptionChecker:
    """Checks options against the registered command definitions.

    Discord enforces these limits in its client, but a request can be crafted
    by anyone holding a token, so the worker must never see values outside them.
    """

    def __init__(self) -> None:
        self._rules = _rules()
        self._types = {c["name"]: c["type"] for c in COMMANDS}

    def problem(
        self, command: str, options: dict[str, Any], command_type: int = CHAT_INPUT
    ) -> str | None:
        """A short explanation of what is wrong with the options, or None when they are fine."""
        rules = self._rules.get(command)
        if rules is None:
            return f"/{shown_name(command)} is not a command I know."
        registered = self._types[command]
        if command_type != registered:
            # A slash command's name sent as a context-menu command, or the other way round.
            kind = "a command of a message's Apps menu" if registered == MESSAGE else "a / command"
            return f"{command_label(command, registered)} is {kind}."
        label = command_label(command, registered)
        for name in options:
            if name not in rules:
                return f"{label} has no option `{shown_name(name)}`."
        for rule in rules.values():
            if rule.name not in options:
                if rule.required:
                    return f"{label} needs the option `{rule.name}`."
                continue
            problem = _check(rule, options[rule.name])
            if problem is not None:
                return f"`{rule.name}` {problem}."
        return None


def _check(rule: _OptionRule, value: Any) -> str | None:
    if rule.kind == OPTION_INTEGER:
        if type(value) is not int:
            return "must be a whole number"
        low, high = rule.min_value, rule.max_value
        if (low is not None and value < low) or (high is not None and value > high):
            return f"must be between {low} and {high}"
    elif rule.kind == OPTION_STRING:
        if not isinstance(value, str):
            return "must be text"
        if rule.min_length is not None and len(value) < rule.min_length:
            return f"must be at least {rule.min_length} characters"
        if rule.max_length is not None and len(value) > rule.max_length:
            return f"must be at most {rule.max_length} characters"
    elif rule.kind in (OPTION_USER, OPTION_CHANNEL) and (
        # Discord sends the id of the member or channel picked.
        not isinstance(value, str) or SNOWFLAKE.fullmatch(value) is None
    ):
        return "must be a Discord id"
    if rule.name in _WHEN_OPTIONS and isinstance(value, str):
        try:
            parse_when(value, datetime.now(UTC))
        except ValueError as exc:
            return f"is not a time I can read ({exc})"
    if rule.choices is not None and value not in rule.choices:
        return "must be one of " + ", ".join(sorted(str(c) for c in rule.choices))
    return None
