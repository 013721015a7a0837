"""/stats end to end on a 100,000-message channel: from the signed request to the chart.

    python -m bench.stats [--messages 100000] [--asks 20]

Real processes: `python -m app web` and `python -m app worker` with a real
redis-server and a local fake Discord (in this process) that records when each
interaction's message arrives. A small guild is synced first (so the store knows
the channel); then the channel's history is written straight into the store:
`--messages` messages over three years by 120 members, more of them lately, in
pages as a sync writes them. Each /stats is sent signed, one at a time, and timed
until the final message, its text and its chart, has reached Discord. The first
/stats after start is reported apart: it pays for importing matplotlib.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.answer import app_env, wait_http

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400.0
YEARS = 3
AUTHORS = 120
PAGE = 2_000
NAMES = ("ana", "ben", "cara", "dev", "eli", "fay", "gus", "hana", "ivo", "jun", "kai")


def history(count: int, end: float, seed: int = 3) -> list[tuple[float, int]]:
    """(time, author number) of `count` messages over YEARS years up to `end`, oldest first.

    Activity grows over time (a server that took off), and a few members write most of it.
    """
    rng = random.Random(seed)
    span = YEARS * 365 * DAY
    weights = [1 / (rank + 1) for rank in range(AUTHORS)]
    authors = rng.choices(range(AUTHORS), weights=weights, k=count)
    times = sorted(end - span * (1 - rng.random() ** 0.6) for _ in range(count))
    return list(zip(times, authors, strict=True))


async def fill(store_url: str, channel_id: str, guild_id: str, count: int) -> float:
    """Write `count` messages into the channel, in pages as a sync does; return messages/s."""
    from datetime import UTC, datetime

    from app.discord.snowflakes import time_snowflake
    from app.store.db import Store
    from app.store.models import StoredMessage

    rows = history(count, time.time() - 3600)
    started = time.perf_counter()
    async with Store.from_url(store_url) as store:
        for first in range(0, count, PAGE):
            page = [
                StoredMessage(
                    id=time_snowflake(at, (first + i) & 0x3FFFFF),
                    channel_id=channel_id,
                    guild_id=guild_id,
                    author_id=str(500_000 + author),
                    author_name=f"{NAMES[author % len(NAMES)].title()} {author}",
                    content=f"message {first + i} about the release, the build or lunch",
                    timestamp=datetime.fromtimestamp(at, UTC),
                )
                for i, (at, author) in enumerate(rows[first : first + PAGE])
            ]
            await store.save_page(channel_id, page)
    return count / (time.perf_counter() - started)


async def parts(store_url: str, channel_id: str) -> dict[str, float]:
    """Milliseconds of each part of /stats (period all), in this process: SQL and drawing."""
    from app.commands.charts import ActivityChart, every_week, render_png
    from app.store.db import Store

    timings: dict[str, list[float]] = {"stats": [], "weeks": [], "render": []}
    sizes = []
    async with Store.from_url(store_url) as store:
        for _ in range(6):
            started = time.perf_counter()
            result = await store.channel_stats([channel_id])
            timings["stats"].append(time.perf_counter() - started)
            started = time.perf_counter()
            weeks = await store.messages_per_week([channel_id])
            timings["weeks"].append(time.perf_counter() - started)
            assert result.first is not None and result.last is not None
            chart = ActivityChart(
                "#general · all time",
                every_week(weeks, result.first.date(), result.last.date()),
                result.top_authors,
            )
            started = time.perf_counter()
            sizes.append(len(render_png(chart)))
            timings["render"].append(time.perf_counter() - started)
    # The first render imports matplotlib: left out, as the end-to-end warm-up is.
    figures = {name: statistics.median(values[1:]) * 1000 for name, values in timings.items()}
    figures["png_kb"] = sizes[-1] / 1024
    figures["weeks_n"] = float(len(weeks))
    return figures


def main(messages: int = 100_000, asks: int = 20) -> dict[str, float]:
    """Time /stats on a `messages`-message channel; print a Markdown table, return the figures."""
    sys.path.insert(0, str(ROOT))
    from app.cli.foreground import sync
    from app.cli.redis_server import RedisServer
    from app.settings import Settings
    from tests.fake_discord import FakeDiscord
    from tests.signing import Signer

    signer = Signer()
    with tempfile.TemporaryDirectory() as tmp, FakeDiscord() as fake:
        guild = fake.add_guild("Benchmark")
        channel = fake.add_channel(guild["id"], "general")
        fake.add_messages(channel["id"], 5, text=lambda i: f"hello number {i}")
        data = Path(tmp) / "data"
        env = app_env(fake, signer, data, RATE_LIMIT_PER_MINUTE="10000")
        asyncio.run(sync(Settings.from_env(env), [guild["id"]], []))
        store_url = f"sqlite:///{data / 'bot.db'}"
        fill_rate = asyncio.run(fill(store_url, channel["id"], guild["id"], messages))
        breakdown = asyncio.run(parts(store_url, channel["id"]))
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
                wait_worker(f"{base}/health", 120)
                plan = ["all"] * (asks + 1) + ["1y"] * (asks // 2) + ["30d"] * (asks // 2)
                rows = [
                    _stats(fake, signer, base, guild, channel, i, p) for i, p in enumerate(plan)
                ]
            finally:
                for process in processes:
                    process.terminate()
                    process.wait(timeout=30)
    first, rows = rows[0], rows[1:]  # the first /stats imports matplotlib in the worker
    figures: dict[str, float] = {
        "messages": float(messages),
        "store_fill_per_s": fill_rate,
        "deferral_ms_p50": statistics.median(r["deferral"] for r in rows) * 1000,
        "first_s": first["final"],
        **{f"part_{name}": value for name, value in breakdown.items()},
    }
    for period in ("all", "1y", "30d"):
        finals = sorted(r["final"] for r in rows if r["period"] == period)
        figures[f"{period}_p50_s"] = statistics.median(finals)
        figures[f"{period}_p95_s"] = _percentile(finals, 0.95)
        figures[f"{period}_max_s"] = finals[-1]
        figures[f"{period}_n"] = float(len(finals))
    _print(figures)
    return figures


def wait_worker(url: str, timeout: float) -> None:
    """Wait until /health sees the worker's heartbeat: its models are loaded, it takes jobs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(url, timeout=2.0).json()["checks"].get("worker", {}).get("ok"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"no worker heartbeat within {timeout:.0f} s")


def _stats(
    fake: Any,
    signer: Any,
    base: str,
    guild: dict[str, Any],
    channel: dict[str, Any],
    n: int,
    period: str,
) -> dict[str, Any]:
    from app.discord.snowflakes import time_snowflake
    from tests.signing import command, encode

    payload = command(
        "stats",
        {"period": period},
        interaction_id=str(time_snowflake(time.time(), n)),
        user_id=str(7_000_000 + n),
        permissions=(1 << 10) | (1 << 16),
    )
    payload.update(
        guild_id=guild["id"],
        channel_id=channel["id"],
        application_id=fake.application_id,
        token=f"bench-stats-token-{n}-abcdefghijklmnopqrstuvwxyz",
    )
    body = encode(payload)
    started = time.monotonic()
    response = httpx.post(f"{base}/interactions", content=body, headers=signer.headers(body))
    deferral = time.monotonic() - started
    if json.loads(response.content)["type"] != 5:
        raise RuntimeError(f"not deferred: {response.text}")
    deadline = started + 60
    while time.monotonic() < deadline:
        original = fake.interaction(payload["token"]).original
        # The final message is the one that carries the chart.
        if original and original.get("attachments"):
            final = time.monotonic() - started
            break
        time.sleep(0.002)
    else:
        raise RuntimeError(f"no chart within 60 s: {fake.interaction(payload['token'])}")
    if fake.violations:
        raise RuntimeError(f"requests Discord would refuse: {fake.violations}")
    return {"period": period, "deferral": deferral, "final": final}


def _percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile of sorted values."""
    return values[min(len(values) - 1, max(0, round(q * len(values) + 0.5) - 1))]


def _print(f: dict[str, float]) -> None:
    print(
        f"/stats end to end on one channel of {f['messages']:,.0f} messages "
        f"({YEARS} years, {AUTHORS} authors; {f['part_weeks_n']:.0f} weeks charted), "
        "one request at a time\n"
    )
    print("| what | p50 | p95 | max | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(f"| signed POST to deferral | {f['deferral_ms_p50']:.1f} ms | | | |")
    labels = {"all": "all time", "1y": "last year", "30d": "last 30 days"}
    for period, label in labels.items():
        target = "< 2 s" if period == "all" else ""
        print(
            f"| signed POST to final message with chart, period {label} "
            f"({f[f'{period}_n']:.0f} runs) | {f[f'{period}_p50_s']:.2f} s "
            f"| {f[f'{period}_p95_s']:.2f} s | {f[f'{period}_max_s']:.2f} s | {target} |"
        )
    print(
        f"\nfirst /stats after the worker started (imports matplotlib): {f['first_s']:.2f} s. "
        f"Parts of one /stats (all time), median, in process: counts and top authors "
        f"{f['part_stats']:.0f} ms, messages per week {f['part_weeks']:.0f} ms, chart drawn "
        f"{f['part_render']:.0f} ms; PNG {f['part_png_kb']:.0f} KB (limit 500 KB). "
        f"Store filled at {f['store_fill_per_s']:,.0f} messages/s."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--asks", type=int, default=20)
    arguments = parser.parse_args()
    main(arguments.messages, arguments.asks)
