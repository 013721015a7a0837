"""Sync throughput: 20,000 messages from a local fake Discord into SQLite and Chroma.

    python -m bench.sync [--messages 20000] [--channels 4] [--runs 3]

Each side runs in a child process of its own, so its peak memory (ru_maxrss)
is its own: our whole sync (REST paging, SQLite, embedding, Chroma) against
plain `SentenceTransformer.encode` of the same texts (torch, batch 32), the
"just embed it" baseline. The one-off ONNX export is made before timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_SUBJECTS = [
    "the deploy",
    "our CI",
    "the new logo",
    "the release",
    "the database",
    "my PR",
    "the API docs",
    "the staging box",
    "the meetup",
    "the onboarding guide",
]
_VERBS = [
    "broke",
    "is fixed",
    "needs review",
    "looks great",
    "moved to Friday",
    "is slow again",
    "got merged",
    "was rolled back",
    "needs more tests",
    "is on the wiki",
]
_TAILS = [
    "",
    " lol",
    " 🎉",
    " — can someone check?",
    " after the last change",
    " (see thread)",
    " thanks all",
    " again??",
    " since yesterday",
    " before the weekend",
]


def texts(count: int, seed: int = 7) -> list[str]:
    """Short chat messages with some variety in length and words, every one different.

    Each names its own ticket number, so the index's encode-each-distinct-text-once
    saving (real on chat: "ok", "thanks") does not flatter the figures here.
    """
    rng = random.Random(seed)
    out = []
    for i in range(count):
        sentence = (
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} (ticket {i + 1000}){rng.choice(_TAILS)}"
        )
        if rng.random() < 0.3:
            sentence += ". " + f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)}".capitalize()
        out.append(sentence)
    return out


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child_ours(api_base: str, token: str, guild_id: str, data_dir: str, models: str) -> None:
    from app.discord.rest import DiscordRest
    from app.settings import Settings
    from app.state import State
    from app.sync.runner import SyncRunner

    settings = Settings.from_env(
        {"DATA_DIR": data_dir, "MODEL_CACHE_DIR": models, "SYNC_RECHECK_DAYS": "0"}
    )

    async def run() -> dict[str, Any]:
        state = await State.open(settings, "benchmark")
        try:
            async with DiscordRest(api_base, token) as rest:
                runner = SyncRunner(rest, state.store, state.indexer, recheck_seconds=0)
                started = time.perf_counter()
                summary = await runner.sync_guilds([guild_id])
                seconds = time.perf_counter() - started
            indexed = await state.index.acount()
        finally:
            await state.close()
        return {"messages": summary.new, "indexed": indexed, "seconds": seconds}

    result = asyncio.run(run())
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def _child_plain(count: str) -> None:
    from sentence_transformers import SentenceTransformer

    from app.retrieval.embedder import default_model_dir

    model = SentenceTransformer(str(default_model_dir()), device="cpu")
    corpus = texts(int(count))
    model.encode(corpus[:64])
    started = time.perf_counter()
    model.encode(corpus, batch_size=32, normalize_embeddings=True)
    seconds = time.perf_counter() - started
    print(json.dumps({"messages": len(corpus), "seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def _run_child(*args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.sync", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _warm_model_cache(models: str) -> None:
    from app.retrieval.embedder import Embedder, default_model_dir

    Embedder(default_model_dir(), cache_dir=Path(models)).load()


def main(messages: int = 20_000, channels: int = 4, runs: int = 3) -> dict[str, float]:
    """Run both sides `runs` times, alternating, and print the medians; return the figures."""
    sys.path.insert(0, str(ROOT))
    from tests.fake_discord import DEFAULT_TOKEN, FakeDiscord

    corpus = texts(messages)
    ours: list[dict[str, Any]] = []
    plain: list[dict[str, Any]] = []
    requests = 0
    with tempfile.TemporaryDirectory() as tmp, FakeDiscord() as fake:
        models = str(Path(tmp) / "models")
        _warm_model_cache(models)
        guild = fake.add_guild("Benchmark")
        per_channel = messages // channels
        for c in range(channels):
            channel = fake.add_channel(guild["id"], f"channel-{c}")
            chunk = corpus[c * per_channel : (c + 1) * per_channel]
            fake.add_messages(channel["id"], len(chunk), text=chunk.__getitem__)
        for run in range(runs):
            # Each run syncs into a fresh data directory; the sides take turns going first.
            before = len(fake.requests)
            data = str(Path(tmp) / f"data-{run}")
            for side in ("ours", "plain") if run % 2 == 0 else ("plain", "ours"):
                if side == "ours":
                    ours.append(
                        _run_child("ours", fake.api_base, DEFAULT_TOKEN, guild["id"], data, models)
                    )
                else:
                    plain.append(_run_child("plain", str(messages)))
            requests = len(fake.requests) - before

    def median(rows: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(row[key] for row in rows))

    ours_rates = [row["messages"] / row["seconds"] for row in ours]
    plain_rates = [row["messages"] / row["seconds"] for row in plain]
    figures = {
        "runs": float(runs),
        "sync_messages": float(ours[-1]["messages"]),
        "sync_indexed": float(min(row["indexed"] for row in ours)),
        "sync_seconds": median(ours, "seconds"),
        "sync_messages_per_s": statistics.median(ours_rates),
        "sync_peak_rss_mb": median(ours, "peak_rss_mb"),
        "sync_rest_requests": float(requests),
        "plain_encode_messages_per_s": statistics.median(plain_rates),
        "plain_encode_peak_rss_mb": median(plain, "peak_rss_mb"),
    }
    ratio = figures["sync_messages_per_s"] / figures["plain_encode_messages_per_s"]
    print(
        f"Sync benchmark: {messages:,} messages in {channels} channels, {os.cpu_count()} cores, "
        f"median of {runs} runs\n"
    )
    print("| what | messages/s (median) | each run | peak memory | target |")
    print("| --- | ---: | --- | ---: | --- |")
    print(
        f"| our sync, end to end (REST, SQLite, embed, Chroma) | "
        f"{figures['sync_messages_per_s']:,.0f} | {', '.join(f'{r:.0f}' for r in ours_rates)} | "
        f"{figures['sync_peak_rss_mb']:,.0f} MB | >= 400 |"
    )
    print(
        f"| plain SentenceTransformer.encode (torch) | "
        f"{figures['plain_encode_messages_per_s']:,.0f} | "
        f"{', '.join(f'{r:.0f}' for r in plain_rates)} | "
        f"{figures['plain_encode_peak_rss_mb']:,.0f} MB | |"
    )
    print(
        f"\nratio ours / plain encode: {ratio:.2f}; every run's index held "
        f"{figures['sync_indexed']:,.0f} vectors or more; {requests} REST requests per run, "
        f"{figures['sync_seconds']:.1f} s"
    )
    figures["ratio_to_plain_encode"] = ratio
    return figures


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "ours":
        _child_ours(*sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "plain":
        _child_plain(*sys.argv[2:])
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--messages", type=int, default=20_000)
        parser.add_argument("--channels", type=int, default=4)
        parser.add_argument("--runs", type=int, default=3)
        options = parser.parse_args()
        main(options.messages, options.channels, options.runs)
