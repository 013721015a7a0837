"""Shared helpers of the fault tests: a synced channel,
and the bookkeeping that tells whether anything reached Discord twice."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.cli.foreground import sync
from tests.fake_discord import FakeDiscord, RecordedRequest
from tests.workers.conftest import worker_settings

WEBHOOK_PREFIX = "/webhooks/"


@dataclass(frozen=True)
class History:
    """A guild channel whose messages are in the fake Discord and synced into DATA_DIR."""

    guild: dict[str, Any]
    channel: dict[str, Any]
    messages: list[dict[str, Any]]

    def stats_text(self) -> str:
        """The exact /stats answer for this channel."""
        names = Counter(m["author"]["global_name"] for m in self.messages)
        first = self.messages[0]["timestamp"][:10]
        last = self.messages[-1]["timestamp"][:10]
        lines = [f"**{len(self.messages):,} messages** from {first} to {last}.", "Top authors:"]
        ranked = sorted(names.items(), key=lambda item: (-item[1], item[0]))
        lines += [f"{rank}. {name}: {count:,}" for rank, (name, count) in enumerate(ranked, 1)]
        return "\n".join(lines)


@pytest.fixture
async def history(fake_discord: FakeDiscord, tmp_path: Path, model_cache_dir: Path) -> History:
    """Twelve messages by three authors in #general, synced into tmp_path/data."""
    guild = fake_discord.add_guild("Fault Club")
    channel = fake_discord.add_channel(guild["id"], "general")
    authors = ["alice"] * 6 + ["bob"] * 4 + ["carol"] * 2
    messages = [
        fake_discord.add_message(channel["id"], f"message number {i} about topic {i % 4}", author=a)
        for i, a in enumerate(authors)
    ]
    settings = worker_settings(tmp_path, fake_discord, "redis://unused:1/0", model_cache_dir)
    summary = await sync(settings, [], [channel["id"]])
    assert not isinstance(summary, str) and summary.new == len(messages)
    return History(guild, channel, messages)


def webhook_requests(fake: FakeDiscord, token: str) -> list[RecordedRequest]:
    """Every request made with one interaction token."""
    marker = f"{WEBHOOK_PREFIX}{fake.application_id}/{token}"
    return [r for r in list(fake.requests) if marker in r.path]


def repeated_after_success(fake: FakeDiscord) -> list[str]:
    """Requests sent again, identical, after Discord had answered the same one with a 2xx."""
    succeeded: set[tuple[str, str, str, str]] = set()
    repeats = []
    for request in sorted(list(fake.requests), key=lambda r: r.time):
        key = (
            request.method,
            request.path,
            json.dumps(request.query, sort_keys=True),
            json.dumps(request.body, sort_keys=True),
        )
        if key in succeeded:
            repeats.append(f"{request.method} {request.path} {key[2]} {key[3][:80]}")
        if 200 <= request.status < 300:
            succeeded.add(key)
    return repeats


ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nothing listens on now, for the worker's metrics."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kill_worker_when(env: dict[str, str], ready: Callable[[], bool]) -> None:
    """Run `python -m app worker` and SIGKILL it as soon as `ready()` holds (2 minutes at most)."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "app", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not ready() and time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited on its own"
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
