from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from app.cli.redis_server import RedisServer
from app.errors import SettingsError
from app.settings import Settings
from app.web.application import create_app
from tests.serving import serving
from tests.signing import Signer, command, encode

ROOT = Path(__file__).resolve().parents[2]
HEAVY = [
    "torch",
    "chromadb",
    "sentence_transformers",
    "transformers",
    "llama_cpp",
    "databases",
    "matplotlib",
    "PIL",
]


def settings(redis_url: str, **env: str) -> Settings:
    return Settings.from_env({"REDIS_URL": redis_url, **env})


def test_health_serves_while_redis_answers_even_without_a_worker(redis_url: str) -> None:
    with TestClient(create_app(settings(redis_url))) as client:
        response = client.get("/health")
    # This instance can take interactions (they queue); the missing worker only degrades it.
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["worker"]["ok"] is False


def test_health_is_503_when_redis_is_down(own_redis: RedisServer) -> None:
    with TestClient(create_app(settings(own_redis.url))) as client:
        own_redis.stop()
        response = client.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "degraded"
        assert body["checks"]["redis"]["ok"] is False
        assert body["checks"]["redis"]["error"]
        own_redis.start()
        assert client.get("/health").status_code == 200


def test_without_discord_credentials_the_app_starts_and_names_the_variable(
    redis_url: str,
) -> None:
    with TestClient(create_app(settings(redis_url))) as client:
        assert client.get("/health").status_code == 200
        response = client.post("/interactions", content=b'{"type":1}')
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert "DISCORD_PUBLIC_KEY" in response.json()["error"]


def test_without_a_redis_url_the_web_process_refuses_to_start() -> None:
    with pytest.raises(SettingsError, match="REDIS_URL"):
        create_app(Settings.from_env({}))


def test_unknown_paths_answer_json(redis_url: str) -> None:
    with TestClient(create_app(settings(redis_url))) as client:
        response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"


async def test_a_redis_client_handed_in_is_used_and_left_open(redis_url: str) -> None:
    signer = Signer()
    client = aioredis.Redis.from_url(redis_url)
    app = create_app(Settings.from_env({"DISCORD_PUBLIC_KEY": signer.public_key_hex}), redis=client)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        body = encode(command("stats"))
        response = await http.post("/interactions", content=body, headers=signer.headers(body))
    assert response.json()["type"] == 5
    assert await client.zcard("arq:queue") == 1
    await client.aclose()


def test_the_web_module_does_not_import_the_heavy_libraries() -> None:
    code = (
        "import json, sys; import app.web.application; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []


@pytest.fixture
async def served(redis_url: str) -> AsyncIterator[tuple[str, Signer]]:
    """The app under a real uvicorn on 127.0.0.1, with the protocol `python -m app web` uses."""
    signer = Signer()
    app = create_app(settings(redis_url, DISCORD_PUBLIC_KEY=signer.public_key_hex))
    async with serving(app, lifespan="on") as port:
        yield f"http://127.0.0.1:{port}", signer


async def test_uvicorn_serves_pings_and_deferrals(served: tuple[str, Signer]) -> None:
    base, signer = served
    async with httpx.AsyncClient(base_url=base) as http:
        for payload, expected in (({"type": 1}, 1), (command("stats"), 5)):
            body = encode(payload)
            response = await http.post("/interactions", content=body, headers=signer.headers(body))
            assert response.status_code == 200
            assert response.json()["type"] == expected


async def test_uvicorn_refuses_a_large_declared_body_without_reading_it(
    served: tuple[str, Signer],
) -> None:
    base, _ = served
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    # Only the head is sent: an answer proves the server did not wait for the body.
    writer.write(
        b"POST /interactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2097152\r\nX-Signature-Ed25519: "
        + b"00" * 64
        + b"\r\nX-Signature-Timestamp: 1\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    assert head.startswith(b"HTTP/1.1 413")
    assert b"content-type: application/json" in head.lower()
    writer.close()
    await writer.wait_closed()


async def test_uvicorn_caps_a_chunked_body_while_streaming(served: tuple[str, Signer]) -> None:
    base, signer = served

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post(
            "/interactions", content=chunks(), headers=signer.headers(b"whatever")
        )
    assert response.status_code == 413
    assert "1 MiB" in response.json()["error"]


@pytest.mark.parametrize("declared", [b"9" * 19, b"9" * 5000])
async def test_an_absurd_declared_length_is_413_not_a_crash(
    redis_url: str, declared: bytes
) -> None:
    app = create_app(settings(redis_url, DISCORD_PUBLIC_KEY="00" * 32))
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/interactions",
        "raw_path": b"/interactions",
        "query_string": b"",
        "headers": [(b"content-length", declared)],
    }
    # TestClient runs the lifespan (Redis, the endpoint); the request goes in as raw ASGI,
    # since an HTTP client would correct the header.
    with TestClient(app):
        await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 413


def test_the_queue_limit_setting_reaches_the_front_door(redis_url: str) -> None:
    signer = Signer()
    app = create_app(settings(redis_url, DISCORD_PUBLIC_KEY=signer.public_key_hex, QUEUE_LIMIT="1"))
    answers: list[dict[str, Any]] = []
    with TestClient(app) as client:
        for n in (1, 2):
            payload = command("stats", interaction_id=f"110000000000000000{n}", user_id=f"22{n}")
            body = encode(payload)
            response = client.post("/interactions", content=body, headers=signer.headers(body))
            answers.append(response.json())
    assert answers[0]["type"] == 5
    assert answers[1]["type"] == 4
    assert "busy" in answers[1]["data"]["content"]
