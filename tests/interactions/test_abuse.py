"""Abuse of POST /interactions with generated bodies and headers, against the real app and Redis.

Whatever arrives: never a 5xx, never a traceback or an exception name in the
answer, never a queued job from an unsigned or malformed request, and a job
only for a signed command the worker can answer as it stands.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import re
import time
from collections.abc import Iterator
from typing import Any, Final, cast

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from app.interactions.commands import CHAT_INPUT, COMMAND_NAMES, COMMANDS, MESSAGE
from app.interactions.invocation import Invocation
from app.interactions.models import OptionChecker
from app.jobs import ANSWER_QUEUE_NAME, JOB_KEY_PREFIX, QUEUE_NAME, QUEUE_NAMES
from app.settings import DEFAULT_QUEUE_LIMIT, Settings
from app.web.application import MAX_BODY_BYTES, create_app
from tests.interactions.test_endpoint import EPHEMERAL, SUPPRESS_EMBEDS, message, queued
from tests.signing import Signer, command, encode

EXCEPTION_NAMES: Final = frozenset(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)
# CamelCase names ending like exceptions do: ValueError, SignatureError, MalformedInteraction...
EXCEPTION_LIKE: Final = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception|Interaction)\b")
OPTION_NAMES: Final = sorted({o["name"] for c in COMMANDS for o in c.get("options", [])})
ABUSE: Final = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def client(redis_url: str, signer: Signer) -> Iterator[TestClient]:
    env = {
        "DISCORD_PUBLIC_KEY": signer.public_key_hex,
        "REDIS_URL": redis_url,
        # Hundreds of examples come from few users; the per-user limit is not under test.
        "RATE_LIMIT_PER_MINUTE": "100000",
    }
    # Server errors must come back as responses here, as uvicorn would send them.
    with TestClient(create_app(Settings.from_env(env)), raise_server_exceptions=False) as opened:
        yield opened


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# Generated values.

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
snowflakes = st.integers(min_value=0, max_value=2**64 - 1).map(str)
command_names = st.sampled_from(sorted(COMMAND_NAMES)) | st.text(max_size=40)
option_values = (
    json_values
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.text(min_size=0, max_size=3)
    | st.integers(min_value=400, max_value=3000).map(lambda n: "q" * n)
    | st.sampled_from(["channel", "server", "everywhere", " ", "NaN"])
)
options = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(OPTION_NAMES) | st.text(max_size=12)},
        optional={"type": json_values, "value": option_values},
    )
    | json_values,
    max_size=4,
)


@st.composite
def interactions(draw: st.DrawFn) -> dict[str, Any]:
    """Interaction-shaped objects with fields missing, of the wrong type, or out of range."""
    raw = command(
        draw(command_names),
        interaction_id=draw(snowflakes),
        user_id=draw(snowflakes),
        permissions=draw(st.integers(min_value=0, max_value=2**53)),
    )
    raw["data"]["options"] = draw(options)
    raw["type"] = draw(st.sampled_from([1, 2, 2, 2, 3, 4, 5]) | st.integers() | json_values)
    for key in draw(st.sets(st.sampled_from(sorted(raw)), max_size=3)):
        if draw(st.booleans()):
            del raw[key]
        else:
            raw[key] = draw(json_values)
    if isinstance(raw.get("member"), dict) and draw(st.booleans()):
        raw["member"] = {**raw["member"], "permissions": draw(json_values | st.text(max_size=60))}
    return raw


def nested(depth: int, opener: str) -> bytes:
    if opener == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"0" + b"}" * depth


deep_bodies = st.builds(
    lambda depth, opener, inside: (
        encode(command("stats"))[:-1] + b',"x":' + nested(depth, opener) + b"}"
        if inside
        else nested(depth, opener)
    ),
    st.integers(min_value=1, max_value=200_000),
    st.sampled_from(["[", "{"]),
    st.booleans(),
)


def sized(size: int, fill: str) -> bytes:
    """A JSON interaction padded to exactly `size` bytes."""
    head = encode(command("ask", {"question": "x"}))[:-1] + b',"pad":"'
    return head + fill.encode() * max(0, size - len(head) - 2) + b'"}'


huge_bodies = st.builds(
    sized,
    st.sampled_from(
        [MAX_BODY_BYTES - 1, MAX_BODY_BYTES, MAX_BODY_BYTES + 1, 2 * MAX_BODY_BYTES, 900_000]
    ),
    st.sampled_from(["a", "[", "\\", "0"]),
)
bodies = (
    interactions().map(encode)
    | json_values.map(encode)
    | st.binary(max_size=300)
    | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
    | deep_bodies
    | huge_bodies
)
HEADER_MODES: Final = [
    "valid",
    "valid",
    "valid",
    "no signature",
    "no timestamp",
    "no headers",
    "short signature",
    "long signature",
    "non-hex signature",
    "spaced signature",
    "other key",
    "stale",
    "future",
    "signed non-numeric timestamp",
    "signed huge timestamp",
    "signed negative timestamp",
    "tampered body",
    "latin-1 timestamp",
]


def headers_for(mode: str, body: bytes, signer: Signer) -> tuple[bytes, dict[str, Any], bool]:
    """(body to send, headers, whether Discord's key truly signed it)."""
    now = int(time.time())
    if mode == "valid":
        return body, signer.headers(body), True
    if mode == "other key":
        return body, Signer().headers(body), False
    if mode == "stale":
        return body, signer.headers(body, now - 3600), False
    if mode == "future":
        return body, signer.headers(body, now + 3600), False
    if mode.startswith("signed"):
        stamp = {"non-numeric": "soon", "huge": "9" * 5000, "negative": str(-now)}
        return body, signer.headers(body, stamp[mode.split()[1]]), False
    headers: dict[str, Any] = signer.headers(body)
    signature = headers["X-Signature-Ed25519"]
    if mode == "tampered body":
        return body + b" ", headers, False
    if mode == "no signature":
        del headers["X-Signature-Ed25519"]
    elif mode == "no timestamp":
        del headers["X-Signature-Timestamp"]
    elif mode == "no headers":
        headers = {}
    elif mode == "short signature":
        headers["X-Signature-Ed25519"] = signature[:-2]
    elif mode == "long signature":
        headers["X-Signature-Ed25519"] = signature + "00"
    elif mode == "non-hex signature":
        headers["X-Signature-Ed25519"] = "zz" + signature[2:]
    elif mode == "spaced signature":
        headers["X-Signature-Ed25519"] = signature[:-2] + " 0"
    elif mode == "latin-1 timestamp":
        headers["X-Signature-Timestamp"] = headers["X-Signature-Timestamp"].encode() + b"\xe9"
    return body, headers, False


# Checks.


def assert_clean(response: Any, sent: bytes) -> None:
    """No server error, a JSON answer, and nothing of Python's insides in it."""
    assert response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json"
    json.loads(response.content)
    text = response.text
    assert "Traceback" not in text
    # The endpoint's answer when a handler raised: every input must have a real answer.
    assert "went wrong" not in text
    for name in set(EXCEPTION_LIKE.findall(text)) | (
        EXCEPTION_NAMES & set(re.findall(r"\w+", text))
    ):
        # Only a name the request itself carried may be quoted back.
        assert name.encode() in sent, text


def jobs(store: redis.Redis) -> set[bytes]:
    waiting = [j for q in QUEUE_NAMES for j in cast(list[bytes], store.zrange(q, 0, -1))]
    return set(waiting) | set(cast(list[bytes], store.keys(JOB_KEY_PREFIX + "*")))


def assert_workable(interaction: dict[str, Any]) -> None:
    """A queued interaction is one the worker can read and answer as it stands."""
    invocation = Invocation.from_raw(interaction)
    assert invocation.command in COMMAND_NAMES
    # A context-menu command carries its target message; a slash command has none.
    kind = MESSAGE if invocation.target is not None else CHAT_INPUT
    assert OptionChecker().problem(invocation.command, invocation.options, kind) is None


# Tests.


@ABUSE
@given(body=bodies, mode=st.sampled_from(HEADER_MODES))
def test_no_request_gets_a_server_error_or_queues_unless_signed_and_well_formed(
    client: TestClient, signer: Signer, store: redis.Redis, body: bytes, mode: str
) -> None:
    store.flushdb()
    sent, headers, signed = headers_for(mode, body, signer)
    response = client.post("/interactions", content=sent, headers=headers)
    assert_clean(response, sent)
    if len(sent) > MAX_BODY_BYTES:
        assert response.status_code == 413
    elif not signed:
        assert response.status_code == 401
    new = queued(store)
    if not signed or response.status_code != 200 or response.json().get("type") != 5:
        assert new == []
        assert jobs(store) == set()
        return
    # Deferred: exactly this interaction is queued, and the worker can answer it.
    assert len(new) == 1
    assert new[0][1] == json.loads(sent)
    assert_workable(new[0][1])


@ABUSE
@given(raw=interactions())
def test_a_signed_interaction_is_answered_or_refused_but_never_queued_broken(
    client: TestClient, signer: Signer, store: redis.Redis, raw: dict[str, Any]
) -> None:
    store.flushdb()
    body = encode(raw)
    response = client.post("/interactions", content=body, headers=signer.headers(body))
    assert_clean(response, body)
    answer = response.json()
    if response.status_code == 400:
        assert set(answer) == {"error"}
    else:
        assert response.status_code == 200
        assert answer.get("type") in (1, 4, 5)
    if answer.get("type") == 4:
        assert answer["data"]["flags"] == EPHEMERAL | SUPPRESS_EMBEDS
        assert answer["data"]["allowed_mentions"] == {"parse": []}
        # Quoting a name from the request never makes a message Discord would refuse.
        assert len(answer["data"]["content"]) <= 2000
    new = queued(store)
    if answer.get("type") == 5:
        assert [i for _, i in new] == [raw]
        assert_workable(raw)
    else:
        assert new == []


bad_ask_options = st.one_of(
    # A question of the wrong type or length.
    st.fixed_dictionaries(
        {
            "question": st.one_of(
                st.integers(),
                st.booleans(),
                st.none(),
                st.floats(allow_nan=False, allow_infinity=False),
                st.lists(st.text(max_size=5), max_size=3),
                st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
                st.text(max_size=1),
                st.integers(min_value=501, max_value=5000).map(lambda n: "w" * n),
            )
        }
    ),
    # A scope outside its choices.
    st.fixed_dictionaries(
        {
            "question": st.just("what changed?"),
            "scope": json_values.filter(lambda v: v not in ("channel", "server")),
        }
    ),
    # An option /ask does not have, or no question at all.
    st.fixed_dictionaries(
        {"question": st.just("what changed?"), "limit": st.integers(min_value=-5, max_value=50)}
    ),
    st.fixed_dictionaries({}, optional={"scope": st.sampled_from(["channel", "server"])}),
)


@ABUSE
@given(values=bad_ask_options)
def test_a_signed_ask_with_bad_options_gets_an_ephemeral_explanation(
    client: TestClient, signer: Signer, store: redis.Redis, values: dict[str, Any]
) -> None:
    store.flushdb()
    raw = command("ask")
    raw["data"]["options"] = [{"name": k, "type": 3, "value": v} for k, v in values.items()]
    body = encode(raw)
    response = client.post("/interactions", content=body, headers=signer.headers(body))
    assert_clean(response, body)
    text = message(response)
    assert "`question`" in text or "`scope`" in text or "`limit`" in text
    assert queued(store) == []


@pytest.mark.parametrize(("depth", "inside"), [(100_000, False), (500, True), (5000, True)])
def test_a_body_nested_too_deep_is_a_bad_request(
    client: TestClient, signer: Signer, store: redis.Redis, depth: int, inside: bool
) -> None:
    # Deep enough to exhaust the decoder's stack, or to fail pickling onto the queue.
    body = nested(depth, "[")
    if inside:
        body = encode(command("stats"))[:-1] + b',"x":' + body + b"}"
    response = client.post("/interactions", content=body, headers=signer.headers(body))
    assert response.status_code == 400
    assert "nested" in response.json()["error"]
    assert queued(store) == []


def test_a_command_with_discords_usual_nesting_is_queued(
    client: TestClient, signer: Signer, store: redis.Redis
) -> None:
    raw = command("stats")
    raw["data"]["resolved"] = {"messages": {"1": {"embeds": [{"fields": [{"name": "a"}]}]}}}
    body = encode(raw)
    response = client.post("/interactions", content=body, headers=signer.headers(body))
    assert response.json()["type"] == 5
    assert [i for _, i in queued(store)] == [raw]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("token", None),
        ("token", 5),
        ("application_id", None),
        ("channel_id", None),
        ("member", None),
        ("id", "not-a-snowflake"),
        ("channel", "general"),
    ],
)
def test_a_signed_command_the_worker_could_not_answer_is_refused_at_the_door(
    client: TestClient, signer: Signer, store: redis.Redis, field: str, value: Any
) -> None:
    raw = command("stats")
    if value is None:
        del raw[field]
    else:
        raw[field] = value
    if field == "channel":
        del raw["channel_id"]
    body = encode(raw)
    response = client.post("/interactions", content=body, headers=signer.headers(body))
    assert response.status_code == 400
    assert "error" in response.json()
    assert queued(store) == []


def test_a_long_unknown_command_name_is_quoted_short(
    client: TestClient, signer: Signer, store: redis.Redis
) -> None:
    body = encode(command("x" * 5000))
    response = client.post("/interactions", content=body, headers=signer.headers(body))
    text = message(response)
    assert "/" + "x" * 32 + "…" in text
    assert len(text) < 100


def test_a_permission_string_of_foreign_digits_grants_nothing(
    client: TestClient, signer: Signer, store: redis.Redis
) -> None:
    raw = command("sync")
    raw["member"]["permissions"] = "²" * 3
    body = encode(raw)
    response = client.post("/interactions", content=body, headers=signer.headers(body))
    assert "Manage Server" in message(response)
    assert queued(store) == []


# The busy limit under a flood.


async def test_a_flood_past_the_queue_limit_gets_busy_answers_and_nothing_more_queued(
    redis_url: str, signer: Signer, store: redis.Redis
) -> None:
    room = 40
    # Jobs already waiting fill the queue up to `room` short of the limit.
    store.zadd(QUEUE_NAME, {f"waiting-{i}": i for i in range(DEFAULT_QUEUE_LIMIT - room)})
    env = {
        "DISCORD_PUBLIC_KEY": signer.public_key_hex,
        "REDIS_URL": redis_url,
        "RATE_LIMIT_PER_MINUTE": "5",
        # The in-process client's own overhead shares the event loop with the app.
        "REDIS_TIMEOUT": "1.4",
    }
    app = create_app(Settings.from_env(env))
    bodies = [
        encode(
            command(
                "ask",
                {"question": f"question {i}?"},
                interaction_id=str(1_300_000_000_000_000_000 + i),
                user_id=str(8_000_000 + i),
            )
        )
        for i in range(150)
    ]
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        responses = await asyncio.gather(
            *(
                http.post("/interactions", content=body, headers=signer.headers(body))
                for body in bodies
            )
        )
    answers = [r.json() for r in responses]
    deferred = [a for a in answers if a == {"type": 5}]
    busy = [a for a in answers if a.get("type") == 4 and "busy" in a["data"]["content"]]
    assert len(deferred) == room
    assert len(busy) == len(bodies) - room
    assert all(a["data"]["flags"] == EPHEMERAL | SUPPRESS_EMBEDS for a in busy)
    assert "try again in a minute" in busy[0]["data"]["content"]
    # The limit counts both queues: /ask waits in the answer queue.
    waiting = cast(int, store.zcard(QUEUE_NAME)) + cast(int, store.zcard(ANSWER_QUEUE_NAME))
    assert waiting == DEFAULT_QUEUE_LIMIT
