from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any, cast

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from app.cli.redis_server import RedisServer
from app.discord.permissions import ADMINISTRATOR, MANAGE_GUILD
from app.interactions.admission import Admission
from app.interactions.commands import ASK, SEARCH, STATS, SUMMARIZE, SYNC
from app.interactions.endpoint import InteractionEndpoint
from app.interactions.verify import SignatureVerifier
from app.jobs import ANSWER_QUEUE_NAME, HANDLE_INTERACTION, JOB_KEY_PREFIX, QUEUE_NAME, QUEUE_NAMES
from app.settings import Settings
from app.web.application import create_app
from tests.discord_spec import signed_interaction_vector
from tests.serving import serving_in_thread
from tests.signing import Signer, command, encode

EPHEMERAL = 64
# Every message the bot sends suppresses link previews.
SUPPRESS_EMBEDS = 4

# starlette's TestClient is built on its own copy of httpx; both post alike.
Client = httpx.Client | TestClient
MakeClient = Callable[..., Client]


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture(params=["asgi", "uvicorn"])
def make_client(
    request: pytest.FixtureRequest, redis_url: str, signer: Signer
) -> Iterator[MakeClient]:
    """Opens clients of the app on the test's Redis, closed at the end.

    Every test runs twice: through starlette's TestClient (the ASGI route) and against
    the app under uvicorn with the front door's protocol, which answers /interactions
    itself (the direct route).
    """
    with ExitStack() as stack:

        def make(
            clock: Callable[[], float] = time.time,
            public_key: str | None = None,
            url: str | None = None,
            **env: str,
        ) -> Client:
            settings = Settings.from_env(
                {
                    "DISCORD_PUBLIC_KEY": public_key or signer.public_key_hex,
                    "REDIS_URL": url or redis_url,
                    **env,
                }
            )
            app = create_app(settings, clock=clock)
            if request.param == "asgi":
                return stack.enter_context(TestClient(app))
            base = stack.enter_context(serving_in_thread(app))
            return stack.enter_context(httpx.Client(base_url=base))

        yield make


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def post(client: Client, signer: Signer, payload: Any, **kwargs: Any) -> Any:
    body = payload if isinstance(payload, bytes) else encode(payload)
    return client.post("/interactions", content=body, headers=signer.headers(body), **kwargs)


def queued(store: redis.Redis) -> list[tuple[str, dict[str, Any]]]:
    """The jobs in the arq queue, as (function, interaction)."""
    jobs = []
    waiting = [job for name in QUEUE_NAMES for job in cast(list[bytes], store.zrange(name, 0, -1))]
    for job_id in waiting:
        raw = store.get(JOB_KEY_PREFIX + job_id.decode())
        assert isinstance(raw, bytes)
        data = pickle.loads(raw)
        jobs.append((data["f"], data["a"][0]))
    return jobs


def message(response: Any) -> str:
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["type"] == 4
    assert body["data"]["flags"] == EPHEMERAL | SUPPRESS_EMBEDS
    assert body["data"]["allowed_mentions"] == {"parse": []}
    text: str = body["data"]["content"]
    return text


def test_ping_is_answered_with_pong(make_client: MakeClient, signer: Signer) -> None:
    response = post(make_client(), signer, {"type": 1, "id": "1"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"type": 1}


def test_the_real_discord_vector_is_accepted_and_unknown_command_explained(
    make_client: MakeClient, store: redis.Redis
) -> None:
    vector = signed_interaction_vector()
    client = make_client(
        clock=lambda: int(vector["timestamp"]) + 5.0, public_key=vector["public_key_hex"]
    )
    headers = {
        "X-Signature-Ed25519": vector["signature_hex"],
        "X-Signature-Timestamp": vector["timestamp"],
    }
    response = client.post("/interactions", content=vector["body"].encode(), headers=headers)
    # The vector invokes a /ping command this application does not have.
    assert "/ping" in message(response)
    assert queued(store) == []
    tampered = vector["body"].replace("Snab", "Snap").encode()
    assert client.post("/interactions", content=tampered, headers=headers).status_code == 401


def test_the_real_vector_is_a_replay_at_the_real_time(make_client: MakeClient) -> None:
    vector = signed_interaction_vector()
    client = make_client(public_key=vector["public_key_hex"])
    headers = {
        "X-Signature-Ed25519": vector["signature_hex"],
        "X-Signature-Timestamp": vector["timestamp"],
    }
    response = client.post("/interactions", content=vector["body"].encode(), headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Signature-Timestamp": "1"},
        {"X-Signature-Ed25519": "ab" * 64},
        {"X-Signature-Ed25519": "not hex" * 18 + "xx", "X-Signature-Timestamp": "1"},
        {"X-Signature-Ed25519": "00 " * 42 + "00", "X-Signature-Timestamp": "1"},
    ],
)
def test_unsigned_or_badly_signed_requests_get_401(
    make_client: MakeClient, headers: dict[str, str]
) -> None:
    response = make_client().post("/interactions", content=b'{"type":1}', headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "invalid request signature"}


def test_a_signature_by_another_key_gets_401(make_client: MakeClient) -> None:
    response = post(make_client(), Signer(), {"type": 1})
    assert response.status_code == 401


def test_an_old_timestamp_gets_401(make_client: MakeClient, signer: Signer) -> None:
    body = b'{"type":1}'
    headers = signer.headers(body, int(time.time()) - 301)
    response = make_client().post("/interactions", content=body, headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        b"nope",
        b"[]",
        b"{}",
        b'{"type":"1"}',
        b'{"type":2}',
        # Python's json module would read these; they are not JSON, and Discord never sends them.
        b'{"type":2,"id":"1","data":{"name":"ask","options":[{"name":"question","value":Infinity}]}}',
        b'{"type":1,"x":NaN}',
    ],
)
def test_signed_bodies_that_are_not_interactions_get_400(
    make_client: MakeClient, signer: Signer, body: bytes
) -> None:
    response = post(make_client(), signer, body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert "error" in response.json()


def test_ask_is_deferred_and_the_whole_interaction_queued(
    make_client: MakeClient, signer: Signer, store: redis.Redis
) -> None:
    raw = command(ASK, {"question": "what did we ship?"})
    response = post(make_client(), signer, raw)
    assert response.status_code == 200
    assert response.json() == {"type": 5}
    assert queued(store) == [(HANDLE_INTERACTION, raw)]
    # The model's commands wait in their own queue, from which idle workers take them.
    assert store.zrange(ANSWER_QUEUE_NAME, 0, -1) == [raw["id"].encode()]
    assert store.zrange(QUEUE_NAME, 0, -1) == []


@pytest.mark.parametrize(
    ("name", "options", "ephemeral"),
    [
        (ASK, {"question": "who decided?", "scope": "server"}, True),
        (ASK, {"question": "who decided?", "scope": "channel"}, False),
        (SEARCH, {"query": "release", "limit": 3}, True),
        (SUMMARIZE, {"count": 100}, False),
        (STATS, {}, True),
    ],
)
def test_each_command_is_deferred_privately_when_it_should_be(
    make_client: MakeClient,
    signer: Signer,
    store: redis.Redis,
    name: str,
    options: dict[str, Any],
    ephemeral: bool,
) -> None:
    response = post(make_client(), signer, command(name, options))
    expected: dict[str, Any] = {"type": 5}
    if ephemeral:
        expected["data"] = {"flags": EPHEMERAL}
    assert response.json() == expected
    assert [f for f, _ in queued(store)] == [HANDLE_INTERACTION]


def test_a_repeated_delivery_is_deferred_but_queued_once(
    make_client: MakeClient, signer: Signer, store: redis.Redis
) -> None:
    client = make_client()
    raw = command(STATS)
    first, second = post(client, signer, raw), post(client, signer, raw)
    assert first.json() == second.json() == {"type": 5, "data": {"flags": EPHEMERAL}}
    assert len(queued(store)) == 1


@pytest.mark.parametrize(
    ("permissions", "allowed"),
    [(0, False), (1 << 4, False), (MANAGE_GUILD, True), (ADMINISTRATOR, True)],
)
def test_sync_needs_manage_server(
    make_client: MakeClient, signer: Signer, store: redis.Redis, permissions: int, allowed: bool
) -> None:
    response = post(make_client(), signer, command(SYNC, permissions=permissions))
    if allowed:
        assert response.json() == {"type": 5, "data": {"flags": EPHEMERAL}}
        assert len(queued(store)) == 1
    else:
        assert "Manage Server" in message(response)
        assert queued(store) == []


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        (SEARCH, {"query": "release", "limit": 11}, "between 1 and 10"),
        (SEARCH, {"query": "release", "limit": "3"}, "whole number"),
        (SUMMARIZE, {"count": 0}, "between 1 and 500"),
        (SUMMARIZE, {"count": 501}, "between 1 and 500"),
        (ASK, {"question": "why?", "scope": "everywhere"}, "channel, server"),
        (ASK, {}, "question"),
    ],
)
def test_bad_options_are_explained_and_nothing_queued(
    make_client: MakeClient,
    signer: Signer,
    store: redis.Redis,
    name: str,
    options: dict[str, Any],
    expected: str,
) -> None:
    response = post(make_client(), signer, command(name, options))
    assert expected in message(response)
    assert queued(store) == []


@pytest.mark.parametrize(
    "payload",
    [
        command("weather"),
        {"type": 3, "id": "7", "data": {"custom_id": "button"}},
        {"type": 4, "id": "8", "data": {"name": ASK}},
        {"type": 5, "id": "9", "data": {"custom_id": "modal"}},
        {"type": 99, "id": "10"},
    ],
)
def test_unknown_commands_and_types_get_an_ephemeral_explanation(
    make_client: MakeClient, signer: Signer, store: redis.Redis, payload: dict[str, Any]
) -> None:
    response = post(make_client(), signer, payload)
    assert message(response)
    assert queued(store) == []


def test_the_rate_limit_answers_when_to_retry_and_spares_other_users(
    make_client: MakeClient, signer: Signer, store: redis.Redis
) -> None:
    client = make_client(RATE_LIMIT_PER_MINUTE="2")
    answers = [
        post(client, signer, command(STATS, interaction_id=str(100 + i))).json() for i in range(3)
    ]
    assert answers[:2] == [{"type": 5, "data": {"flags": EPHEMERAL}}] * 2
    text = answers[2]["data"]["content"]
    assert answers[2]["type"] == 4
    assert "try again in" in text
    seconds = int(text.split("try again in ")[1].split()[0])
    assert 1 <= seconds <= 60
    other = post(client, signer, command(STATS, interaction_id="200", user_id="99"))
    assert other.json()["type"] == 5
    assert len(queued(store)) == 3


def test_pings_are_not_rate_limited(make_client: MakeClient, signer: Signer) -> None:
    client = make_client(RATE_LIMIT_PER_MINUTE="1")
    for _ in range(5):
        assert post(client, signer, {"type": 1}).json() == {"type": 1}


def test_redis_stopped_mid_test_is_answered_in_time_then_recovers(
    make_client: MakeClient, signer: Signer, own_redis: RedisServer
) -> None:
    client = make_client(url=own_redis.url, REDIS_TIMEOUT="1.0")
    assert post(client, signer, command(STATS, interaction_id="1")).json()["type"] == 5
    own_redis.stop()
    started = time.monotonic()
    response = post(client, signer, command(STATS, interaction_id="2"))
    assert time.monotonic() - started < 1.5
    assert "temporarily unavailable" in message(response)
    own_redis.start()
    assert post(client, signer, command(STATS, interaction_id="3")).json()["type"] == 5


def test_a_stalled_redis_is_answered_within_the_timeout(
    make_client: MakeClient, signer: Signer, store: redis.Redis
) -> None:
    client = make_client(REDIS_TIMEOUT="0.3")
    assert post(client, signer, {"type": 1}).status_code == 200
    store.client_pause(2000, all=False)
    started = time.monotonic()
    response = post(client, signer, command(STATS))
    assert time.monotonic() - started < 1.0
    assert "temporarily unavailable" in message(response)


def test_a_body_over_one_mib_is_refused_by_its_length(
    make_client: MakeClient, signer: Signer
) -> None:
    body = b'{"type":1,"pad":"' + b"x" * (1 << 20) + b'"}'
    response = post(make_client(), signer, body)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"


def test_a_streamed_body_over_one_mib_is_refused_while_reading(
    make_client: MakeClient, signer: Signer
) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 65536

    response = make_client().post(
        "/interactions", content=chunks(), headers=signer.headers(b"irrelevant")
    )
    assert response.status_code == 413


def test_a_streamed_body_under_the_cap_is_verified(make_client: MakeClient, signer: Signer) -> None:
    body = encode({"type": 1, "pad": "x" * 200_000})

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    response = make_client().post("/interactions", content=chunks(), headers=signer.headers(body))
    assert response.json() == {"type": 1}


def test_only_post_is_allowed(make_client: MakeClient) -> None:
    response = make_client().get("/interactions")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"


def test_one_log_line_per_request_without_the_token(
    make_client: MakeClient, signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    raw = command(ASK, {"question": "what is new?"}, interaction_id="777")
    with caplog.at_level(logging.INFO, logger="app.interactions.endpoint"):
        post(client, signer, raw)
    records = [r for r in caplog.records if r.name == "app.interactions.endpoint"]
    assert len(records) == 1
    fields = records[0].__dict__
    assert fields["interaction_id"] == "777"
    assert fields["interaction_type"] == 2
    assert fields["command"] == ASK
    assert fields["outcome"] == "queued"
    assert fields["status"] == 200
    assert isinstance(fields["latency_ms"], float)
    assert raw["token"] not in json.dumps({k: str(v) for k, v in fields.items()})


async def test_only_a_command_to_admit_leaves_its_reply_to_a_coroutine(
    redis_url: str, signer: Signer, store: redis.Redis
) -> None:
    # The front door's protocol writes a reply it gets at once from the parser's callback.
    client = aioredis.Redis.from_url(redis_url)
    admission = Admission(client, rate_limit_per_minute=5, timeout=1.0, clock=time.time)
    verifier = SignatureVerifier(signer.public_key_hex, 300, time.time)
    endpoint = InteractionEndpoint(verifier, admission)

    def respond(payload: dict[str, Any]) -> Any:
        body = encode(payload)
        headers = signer.headers(body)
        return endpoint.respond(
            body, headers["X-Signature-Ed25519"], headers["X-Signature-Timestamp"]
        )

    try:
        assert respond({"type": 1}) == (200, b'{"type":1}')
        unsigned = endpoint.respond(b'{"type":1}', None, None)
        assert isinstance(unsigned, tuple)
        assert unsigned[0] == 401
        for refused in (command("weather"), command(SEARCH, {"query": "x", "limit": 11})):
            status, body = respond(refused)
            assert (status, json.loads(body)["type"]) == (200, 4)
        pending = respond(command(ASK, {"question": "what shipped?"}))
        assert not isinstance(pending, tuple)
        assert queued(store) == []  # nothing is admitted until the reply is awaited
        assert await pending == (200, b'{"type":5}')
        assert len(queued(store)) == 1
    finally:
        await admission.aclose()
        await client.aclose()
