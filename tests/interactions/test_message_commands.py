"""Context-menu commands and /summarize's `since` at the front door: parsed, checked, queued."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import redis

from app.interactions.commands import (
    CHAT_INPUT,
    FIND_RELATED,
    MESSAGE,
    SUMMARIZE_FROM_HERE,
    is_ephemeral,
)
from app.interactions.invocation import InvalidInvocation, Invocation
from app.interactions.models import OptionChecker, parse_interaction
from app.jobs import JOB_KEY_PREFIX
from app.retrieval.query import WHEN_FORMATS
from tests.interactions.test_endpoint import (
    EPHEMERAL,
    MakeClient,
    make_client,
    message,
    post,
    signer,
    store,
)
from tests.signing import Signer, command, encode, message_command, target_message

__all__ = ["make_client", "signer", "store"]


@pytest.mark.parametrize("since", ["24h", "3d", "2w", "6m", "1y", "2026-11-01", "yesterday"])
def test_summarize_since_takes_the_time_words_search_takes(since: str) -> None:
    assert OptionChecker().problem("summarize", {"since": since}) is None
    assert OptionChecker().problem("summarize", {"since": since, "count": 100}) is None


@pytest.mark.parametrize("since", ["last tuesday", "3 days", "-1d", "2026-13-45", ""])
def test_a_bad_since_is_explained_with_what_is_accepted(since: str) -> None:
    problem = OptionChecker().problem("summarize", {"since": since})
    assert problem is not None
    assert problem.startswith("`since` is not a time I can read")
    assert WHEN_FORMATS in problem


def test_since_must_be_short_text() -> None:
    assert "must be text" in (OptionChecker().problem("summarize", {"since": 3}) or "")
    assert "at most 40" in (OptionChecker().problem("summarize", {"since": "1d" * 21}) or "")


@pytest.mark.parametrize("name", [FIND_RELATED, SUMMARIZE_FROM_HERE])
def test_a_context_menu_command_takes_no_options_and_only_its_own_type(name: str) -> None:
    checker = OptionChecker()
    assert checker.problem(name, {}, MESSAGE) is None
    assert checker.problem(name, {"count": 5}, MESSAGE) == f"“{name}” has no option `count`."
    assert "Apps menu" in (checker.problem(name, {}, CHAT_INPUT) or "")
    assert "Apps menu" in (checker.problem(name, {}) or "")


def test_a_slash_command_sent_as_a_message_command_is_refused() -> None:
    assert OptionChecker().problem("summarize", {}, MESSAGE) == "/summarize is a / command."
    assert OptionChecker().problem("stats", {}, 0) == "/stats is a / command."


def test_the_command_type_is_read_from_data() -> None:
    raw = message_command(FIND_RELATED, target_message())
    assert parse_interaction(encode(raw)).command_type == MESSAGE
    assert parse_interaction(encode(command("ask"))).command_type == CHAT_INPUT
    raw["data"]["type"] = "3"
    assert parse_interaction(encode(raw)).command_type == 0
    del raw["data"]["type"]
    assert parse_interaction(encode(raw)).command_type == CHAT_INPUT


def test_the_target_message_is_read_from_resolved() -> None:
    target = target_message("see the deploy checklist")
    invocation = Invocation.from_raw(message_command(SUMMARIZE_FROM_HERE, target))
    assert invocation.target is not None
    assert invocation.target.id == int(target["id"])
    assert invocation.target.channel_id == target["channel_id"] == invocation.channel_id
    assert invocation.target.content == "see the deploy checklist"
    assert invocation.target.author_id == target["author"]["id"]
    assert invocation.target.timestamp is not None
    assert invocation.target.timestamp.isoformat().startswith("2026-11-01T12:00")
    assert invocation.options == {}
    assert Invocation.from_raw(command("ask", {"question": "why?"})).target is None


def _broken(change: str) -> dict[str, Any]:
    raw = message_command(FIND_RELATED, target_message())
    data, target_id = raw["data"], raw["data"]["target_id"]
    resolved = data["resolved"]["messages"][target_id]
    if change == "no target_id":
        del data["target_id"]
    elif change == "target_id not a snowflake":
        data["target_id"] = "abc"
        data["resolved"]["messages"] = {"abc": {**resolved, "id": "abc"}}
    elif change == "target_id a number":
        data["target_id"] = int(target_id)
    elif change == "no resolved":
        del data["resolved"]
    elif change == "resolved messages not a dict":
        data["resolved"]["messages"] = [resolved]
    elif change == "another message resolved":
        data["resolved"]["messages"] = {"6600000000000000002": resolved}
    elif change == "resolved id differs":
        resolved["id"] = "6600000000000000002"
    elif change == "no channel_id":
        del resolved["channel_id"]
    elif change == "another channel":
        resolved["channel_id"] = "4400000000000000002"
    return raw


BROKEN = [
    "no target_id",
    "target_id not a snowflake",
    "target_id a number",
    "no resolved",
    "resolved messages not a dict",
    "another message resolved",
    "resolved id differs",
    "no channel_id",
    "another channel",
]


@pytest.mark.parametrize("change", BROKEN)
def test_a_message_command_without_its_target_is_invalid(change: str) -> None:
    with pytest.raises(InvalidInvocation):
        Invocation.from_raw(_broken(change))


def test_find_related_is_private_and_summarize_from_here_is_not() -> None:
    assert is_ephemeral(FIND_RELATED, {})
    assert not is_ephemeral(SUMMARIZE_FROM_HERE, {})


# Through the door, on both routes (see test_endpoint.make_client).


def test_a_context_menu_command_is_deferred_and_queued(
    make_client: MakeClient, signer: Signer, store: redis.Redis
) -> None:
    client = make_client()
    related = message_command(FIND_RELATED, target_message())
    here = message_command(
        SUMMARIZE_FROM_HERE, target_message(), interaction_id="1100000000000000002"
    )
    assert post(client, signer, related).json() == {"type": 5, "data": {"flags": EPHEMERAL}}
    assert post(client, signer, here).json() == {"type": 5}
    # Each is queued whole, whichever queue its command waits in.
    for raw in (related, here):
        job = store.get(JOB_KEY_PREFIX + raw["id"])
        assert isinstance(job, bytes)
        assert pickle.loads(job)["a"] == (raw,)


@pytest.mark.parametrize("change", BROKEN)
def test_a_message_command_without_its_target_is_a_bad_request(
    make_client: MakeClient, signer: Signer, store: redis.Redis, change: str
) -> None:
    response = post(make_client(), signer, _broken(change))
    assert response.status_code == 400
    assert "target" in response.json()["error"]
    assert store.keys(JOB_KEY_PREFIX + "*") == []


def test_a_context_menu_command_sent_as_a_slash_command_is_refused(
    make_client: MakeClient, signer: Signer, store: redis.Redis
) -> None:
    text = message(post(make_client(), signer, command(FIND_RELATED)))
    assert text == f"“{FIND_RELATED}” is a command of a message's Apps menu."
    assert store.keys(JOB_KEY_PREFIX + "*") == []


def test_a_bad_since_gets_a_private_message_and_nothing_is_queued(
    make_client: MakeClient, signer: Signer, store: redis.Redis
) -> None:
    text = message(post(make_client(), signer, command("summarize", {"since": "last week"})))
    assert text == f"`since` is not a time I can read ({WHEN_FORMATS})."
    assert store.keys(JOB_KEY_PREFIX + "*") == []
