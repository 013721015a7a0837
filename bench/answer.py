"""/ask end to end: from the signed interaction to the first visible text and the final answer.

    python -m bench.answer [--asks 8]

Real processes: `python -m app web` and `python -m app worker` with a real
redis-server, the bundled models, and a local fake Discord (in this process)
that records when each edit of the answer arrives. A small guild is synced
first; then each /ask is sent signed, one at a time, and timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL = "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original"
FACTS = [
    "The staging database password is rotated every Tuesday by ops.",
    "Dana moved the all-hands meeting to 3pm on Thursday.",
    "The CI pipeline broke because of a flaky integration test.",
    "The release notes for 2.4 live on the wiki under Releases.",
]
QUESTIONS = [
    "When is the staging database password rotated?",
    "Who moved the all-hands meeting?",
    "What broke the CI pipeline?",
    "Where are the release notes?",
]


def wait_http(url: str, timeout: float) -> None:
    """Wait until `url` answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


def seed_channel(fake: Any, guild_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A guild whose #general holds 300 status updates and the FACTS; (guild, channel)."""
    guild = fake.add_guild(guild_name)
    channel = fake.add_channel(guild["id"], "general")
    fake.add_messages(channel["id"], 300, text=lambda i: f"status update number {i}")
    for fact in FACTS:
        fake.add_message(channel["id"], fact)
    return guild, channel


def app_env(fake: Any, signer: Any, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of the bot's processes, talking to `fake` and signed by `signer`."""
    from app.cli.redis_server import free_port
    from tests.fake_discord import DEFAULT_TOKEN

    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATA_DIR": str(data_dir),
        "DISCORD_APPLICATION_ID": fake.application_id,
        "DISCORD_PUBLIC_KEY": signer.public_key_hex,
        "DISCORD_BOT_TOKEN": DEFAULT_TOKEN,
        "DISCORD_API_BASE": fake.api_base,
        "SYNC_RECHECK_DAYS": "0",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "LOG_LEVEL": "WARNING",
        "TQDM_DISABLE": "1",
        "HF_HUB_OFFLINE": "1",
        **extra,
    }


def main(asks: int = 8) -> dict[str, float]:
    """Time `asks` /ask interactions; print a Markdown table and return the figures."""
    sys.path.insert(0, str(ROOT))
    from app.cli.foreground import sync
    from app.cli.redis_server import RedisServer
    from app.discord.snowflakes import time_snowflake
    from app.settings import Settings
    from tests.fake_discord import FakeDiscord
    from tests.signing import Signer, command, encode

    signer = Signer()
    with tempfile.TemporaryDirectory() as tmp, FakeDiscord() as fake:
        guild, channel = seed_channel(fake, "Benchmark")
        env = app_env(fake, signer, Path(tmp) / "data", RATE_LIMIT_PER_MINUTE="1000")
        asyncio.run(sync(Settings.from_env(env), [guild["id"]], []))
        with RedisServer(Path(tmp) / "redis", persist=False) as redis:
            env["REDIS_URL"] = redis.url
            processes = [
                subprocess.Popen(
                    [sys.executable, "-m", "app", role],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for role in ("web", "worker")
            ]
            try:
                base = f"http://127.0.0.1:{env['PORT']}"
                wait_http(f"{base}/health", 60)
                rows = [
                    _ask(fake, signer, base, guild, channel, i, command, encode, time_snowflake)
                    for i in range(asks + 1)
                ]
            finally:
                for process in processes:
                    process.terminate()
                    process.wait(timeout=30)
    rows = rows[1:]  # the first ask warms the worker's caches
    figures = {
        "asks": float(len(rows)),
        "deferral_ms_p50": statistics.median(r["deferral"] for r in rows) * 1000,
        "first_text_s_p50": statistics.median(r["first"] for r in rows),
        "first_text_s_max": max(r["first"] for r in rows),
        "final_s_p50": statistics.median(r["final"] for r in rows),
        "final_s_max": max(r["final"] for r in rows),
    }
    print(f"/ask end to end, bundled Gemma 3 270M, {len(rows)} asks one at a time\n")
    print("| what | p50 | max |")
    print("| --- | ---: | ---: |")
    print(f"| signed POST to deferral | {figures['deferral_ms_p50']:.1f} ms | |")
    print(
        f"| signed POST to first visible text | {figures['first_text_s_p50']:.2f} s "
        f"| {figures['first_text_s_max']:.2f} s |"
    )
    print(
        f"| signed POST to final answer | {figures['final_s_p50']:.2f} s "
        f"| {figures['final_s_max']:.2f} s |"
    )
    return figures


def _ask(
    fake: Any,
    signer: Any,
    base: str,
    guild: dict[str, Any],
    channel: dict[str, Any],
    n: int,
    command: Any,
    encode: Any,
    time_snowflake: Any,
) -> dict[str, float]:
    payload = command(
        "ask",
        {"question": QUESTIONS[n % len(QUESTIONS)]},
        interaction_id=str(time_snowflake(time.time(), n)),
        user_id=str(7_000_000 + n),
        permissions=(1 << 10) | (1 << 16),
    )
    payload.update(
        guild_id=guild["id"],
        channel_id=channel["id"],
        application_id=fake.application_id,
        token=f"bench-token-{n}-abcdefghijklmnopqrstuvwxyz",
    )
    body = encode(payload)
    started = time.monotonic()
    response = httpx.post(f"{base}/interactions", content=body, headers=signer.headers(body))
    deferral = time.monotonic() - started
    if json.loads(response.content)["type"] != 5:
        raise RuntimeError(f"not deferred: {response.text}")
    first = final = None
    deadline = started + 180
    while final is None and time.monotonic() < deadline:
        delivered = fake.interaction(payload["token"])
        if first is None and delivered.edits:
            first = time.monotonic() - started
        content = delivered.original["content"] if delivered.original else ""
        # Progress edits end with an ellipsis; the final answer does not.
        if content and not content.endswith("…"):
            final = time.monotonic() - started
        time.sleep(0.005)
    if first is None or final is None:
        raise RuntimeError("no answer within 180 s")
    return {"deferral": deferral, "first": first, "final": final}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asks", type=int, default=8)
    main(parser.parse_args().asks)
