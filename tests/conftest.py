"""Shared fixtures: a real redis-server for the session, and a clean database per test."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from app.cli.redis_server import RedisServer
from app.logs import SecretFilter

pytest_plugins = ["tests.fake_discord", "tests.engines"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server on 127.0.0.1 for the whole session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), persist=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> AsyncIterator[str]:
    """The session server's URL, emptied before each test."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    yield redis_server.url


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the embedding model's ONNX export, shared by the whole session."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop and restart it."""
    server = RedisServer(tmp_path / "redis", persist=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_leaked_log_handler() -> Iterator[None]:
    """A test that runs the command line in-process installs its stderr handler on the root
    logger; take it away afterwards, or later tests would log into a closed capture stream
    (and lose `exc_info`, which the handler's filter clears)."""
    yield
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if any(isinstance(f, SecretFilter) for f in handler.filters):
            root.removeHandler(handler)
