from __future__ import annotations

from typing import Any

import pytest

from app.discord.permissions import ADMINISTRATOR, MANAGE_GUILD
from app.interactions.models import (
    MalformedInteraction,
    OptionChecker,
    parse_interaction,
)
from tests.discord_spec import signed_interaction_vector
from tests.signing import command, encode


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"type": 1, "x": NaN}', "not JSON"),
        (b'{"type": 1, "x": "\\ud800"}', "not JSON"),
        (b'{"type": 1, "x": ' + b"[" * 2000 + b"]" * 2000 + b"}", "nested too deeply"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"{}", "no integer type"),
        (b'{"type": "2"}', "no integer type"),
        (b'{"type": true}', "no integer type"),
        (b'{"type": 2.0}', "no integer type"),
        (b'{"type": 2}', "no id"),
        (b'{"type": 2, "id": 5}', "not a string"),
    ],
)
def test_bodies_that_are_not_interactions(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedInteraction, match=reason):
        parse_interaction(body)


def test_the_real_interaction_parses() -> None:
    interaction = parse_interaction(signed_interaction_vector()["body"].encode())
    assert interaction.type == 2
    assert interaction.id == "938421734825140264"
    assert interaction.command == "ping"
    assert interaction.user_id == "115590097100865541"
    assert interaction.permissions == 2199023255551
    assert interaction.raw["token"].startswith("aW50")


def test_a_command_is_read_with_its_options_user_and_permissions() -> None:
    raw = command("search", {"query": "release", "limit": 3}, permissions=MANAGE_GUILD)
    interaction = parse_interaction(encode(raw))
    assert interaction.command == "search"
    assert interaction.options == {"query": "release", "limit": 3}
    assert interaction.user_id == "2200000000000000001"
    assert interaction.has_permission(MANAGE_GUILD)
    assert interaction.raw == raw


def test_a_user_outside_a_guild_is_read_from_user() -> None:
    raw: dict[str, Any] = {"type": 2, "id": "1", "data": {"name": "stats"}, "user": {"id": "7"}}
    interaction = parse_interaction(encode(raw))
    assert interaction.user_id == "7"
    assert interaction.permissions == 0


@pytest.mark.parametrize(
    ("permissions", "allowed"),
    [
        ("0", False),
        (str(1 << 4), False),
        (str(MANAGE_GUILD), True),
        (str(ADMINISTRATOR), True),
        ("-32", False),
        (32, False),
        ("x", False),
    ],
)
def test_permissions_come_from_the_decimal_string(permissions: Any, allowed: bool) -> None:
    raw = command("sync")
    raw["member"]["permissions"] = permissions
    assert parse_interaction(encode(raw)).has_permission(MANAGE_GUILD) is allowed


def test_a_ping_and_other_types_parse_without_command_fields() -> None:
    assert parse_interaction(b'{"type":1}').command is None
    component = parse_interaction(b'{"type":3,"id":"9","data":{"custom_id":"x"}}')
    assert component.type == 3
    assert component.command is None


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("ask", {"question": "what did we decide?"}),
        ("ask", {"question": "what did we decide?", "scope": "server"}),
        ("ask", {"question": "what did we decide?", "scope": "channel"}),
        ("search", {"query": "deploy", "limit": 1}),
        ("search", {"query": "deploy", "limit": 10}),
        ("search", {"query": "deploy"}),
        ("summarize", {}),
        ("summarize", {"count": 1}),
        ("summarize", {"count": 500}),
        ("stats", {}),
        ("sync", {}),
    ],
)
def test_valid_options_pass(name: str, options: dict[str, Any]) -> None:
    assert OptionChecker().problem(name, options) is None


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("search", {"query": "deploy", "limit": 0}, "between 1 and 10"),
        ("search", {"query": "deploy", "limit": 11}, "between 1 and 10"),
        ("search", {"query": "deploy", "limit": "5"}, "whole number"),
        ("search", {"query": "deploy", "limit": 5.0}, "whole number"),
        ("search", {"query": "deploy", "limit": True}, "whole number"),
        ("summarize", {"count": 0}, "between 1 and 500"),
        ("summarize", {"count": 501}, "between 1 and 500"),
        ("ask", {"question": "why?", "scope": "galaxy"}, "channel, server"),
        ("ask", {"question": 42}, "must be text"),
        ("ask", {"question": "x"}, "at least 2"),
        ("ask", {"question": "x" * 501}, "at most 500"),
        ("ask", {}, "needs the option `question`"),
        ("stats", {"count": 5}, "no option `count`"),
        ("nonsense", {}, "not a command"),
    ],
)
def test_wrong_options_are_explained(name: str, options: dict[str, Any], expected: str) -> None:
    problem = OptionChecker().problem(name, options)
    assert problem is not None
    assert expected in problem
