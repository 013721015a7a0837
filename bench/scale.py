"""Scale-out: answers per minute with one and two workers, and sync on the shared engines.

    python -m bench scale          # or: python -m bench.scale [--questions 24]

Everything runs here, for real: a Redis, a throw-away PostgreSQL 15 server with its usual
durability and `chroma run` (tests/engines.py), the local fake Discord, and
`python -m app web` / `worker` processes.

* Answers: the same questions, signed, all posted at once to one web process, answered by
  one worker (LLM_THREADS=1) and then by two (LLM_THREADS=1 each), with the default model.
  Answers per minute count from the first question posted to the `--questions`th answer,
  with `EXTRA` more questions posted behind them, so that the queue is never empty in the
  measured span (the rate to the very last answer, which also counts a worker waiting
  for the other to finish, is printed too). Every question must be answered exactly once.
* Sync: the same history synced into SQLite with the embedded index, and into PostgreSQL
  with the Chroma server, in one run; messages per second of each.
* The machine's own ceiling: /ask prompts of the same history (15 of its messages each,
  not what the workers retrieved) run through bare llama.cpp (no bot, no engines), in one
  process and then in two processes at once (1 thread each). What two workers can gain
  over one is bounded by what two bare models gain over one, since both share the memory
  bus and the cores with everything else.
* What each phase did, to check that both did the same work: prompt tokens, tokens
  generated and seconds in llama.cpp per answer, from each worker's log line per
  generation; and CPU seconds per answer by kind of process (`bench/cpu.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cpu import CpuUse

ROOT = Path(__file__).resolve().parents[1]
# Questions posted beyond those measured, so that every worker has work to the end.
EXTRA = 4
_TOPICS = [
    "the deploy of the billing service",
    "the staging database",
    "the design review",
    "the on-call rota",
    "the new onboarding guide",
    "the flaky login test",
]
_QUESTIONS = [
    "When is {} planned?",
    "Who worked on {}?",
    "What went wrong with {}?",
    "What was decided about {}?",
]
# The worker's log line for each generation (app/llm/generator.py).
_GENERATED = re.compile(r"generated (\d+) tokens after (\d+) prompt tokens in ([0-9.]+)s")
# What the CPU rows call each kind of process (bench/cpu.py).
_CPU_LABELS = {
    "worker": "the workers",
    "web": "the web process",
    "postgres": "postgres",
    "chroma": "chroma",
    "redis": "redis",
    "bench": "this process (the fake Discord, the clock)",
    "other": "anything else",
    "machine": "the whole machine (/proc/stat)",
    "steal": "taken by the hypervisor for other machines (steal)",
}


def history(count: int) -> list[str]:
    """Chat about a few topics, with the facts questions ask about."""
    lines = []
    for i in range(count):
        topic = _TOPICS[i % len(_TOPICS)]
        day = 1 + i % 27
        lines.append(
            f"update on {topic}: moved to March {day}, owner is person{i % 13}, "
            f"blocked by ticket {1000 + i}"
        )
    return lines


def questions(count: int) -> list[str]:
    return [
        _QUESTIONS[i % len(_QUESTIONS)].format(_TOPICS[(i // len(_QUESTIONS)) % len(_TOPICS)])
        for i in range(count)
    ]


async def _sync_rate(settings: Any, channel_ids: list[str]) -> tuple[float, int]:
    from app.cli.foreground import sync

    summary = await sync(settings, [], channel_ids)
    assert not isinstance(summary, str), summary
    return summary.new / summary.seconds, summary.new


async def _answers_per_minute(
    cluster: Any,
    workers: list[str],
    redis_url: str,
    fake: Any,
    signer: Any,
    channel: dict[str, Any],
    asked: list[str],
) -> dict[str, float]:
    """Answers per minute while the queue is never empty, and until the very last answer.

    `asked` and then `EXTRA` more questions are posted at once; the rate counts the first
    len(asked) answers, so no worker ever waits for work in the measured span (the end of
    a run, where one worker has finished and the other still answers, is not throughput).
    """
    from tests.scaleout.test_two_workers import delivered_once, post_all
    from tests.workers.conftest import interaction

    for name in workers:
        cluster.start(name, "worker", LLM_THREADS="1")
    web = cluster.start(f"web-{len(workers)}", "web")
    url = cluster.wait_for_web(web.name)
    await cluster.wait_for_workers(redis_url, workers, within=600)
    items = [
        interaction(
            fake,
            "ask",
            {"question": q},
            guild_id=channel["guild_id"],
            channel_id=channel["id"],
            permissions=(1 << 10) | (1 << 16),
        )
        for q in [*asked, *asked[:EXTRA]]
    ]
    names = {p.popen.pid: "worker" for n, p in cluster.processes.items() if n in workers}
    names[web.popen.pid] = "web"
    with CpuUse(names) as use:
        started = time.monotonic()
        await post_all([url], signer, items)
        outcomes, finished = await _timed_results(redis_url, items, started, within=3600)
    answered = [i for i in items if outcomes[i["id"]] in ("ok", "cut_short")]
    once = sum(1 for i in items if delivered_once(fake, i))
    by_worker = {n: cluster.answered(n).get("ask", 0.0) for n in workers}
    for name in [*workers, web.name]:
        cluster.processes[name].popen.terminate()
        cluster.processes[name].popen.wait(60)
    runs = [g for name in workers for g in _generations(cluster.processes[name].log)]
    if len(runs) < len(answered):
        raise RuntimeError(
            "fewer generations in the workers' logs than answers: has the log "
            "line of app/llm/generator.py changed?"
        )
    times = sorted(finished.values())
    steady = times[len(asked) - 1] if len(times) >= len(asked) else float("inf")
    last = times[-1] if times else float("inf")
    return {
        "per_minute": 60 * len(asked) / steady,
        "seconds": steady,
        "per_minute_to_last": 60 * len(answered) / last,
        "seconds_to_last": last,
        "answered": float(len(answered)),
        "lost": float(len(items) - len(answered)),
        "not_once": float(len(items) - once),
        **{f"by_{n}": v for n, v in by_worker.items()},
        **{f"cpu_{kind}": seconds / len(items) for kind, seconds in use.seconds.items()},
        **{
            f"llm_{what}": sum(run[i] for run in runs) / max(1, len(runs))
            for i, what in enumerate(("tokens", "prompt_tokens", "seconds"))
        },
    }


def _generations(log: Path) -> list[tuple[float, float, float]]:
    """Each generation a worker logged: tokens generated, prompt tokens, seconds."""
    text = log.read_text(errors="replace")
    return [(float(a), float(b), float(c)) for a, b, c in _GENERATED.findall(text)]


async def _timed_results(
    redis_url: str, items: list[dict[str, Any]], started: float, within: float
) -> tuple[dict[str, Any], dict[str, float]]:
    """Each interaction's job result, and when it appeared (seconds from `started`)."""
    import redis.asyncio as aioredis
    from arq.jobs import deserialize_result

    from app.jobs import RESULT_KEY_PREFIX

    redis = aioredis.Redis.from_url(redis_url)
    outcomes: dict[str, Any] = {}
    finished: dict[str, float] = {}
    try:
        while len(outcomes) < len(items) and time.monotonic() - started < within:
            waiting = [i["id"] for i in items if i["id"] not in outcomes]
            raw = await redis.mget([RESULT_KEY_PREFIX + i for i in waiting])
            now = time.monotonic() - started
            for interaction_id, result in zip(waiting, raw, strict=True):
                if result is not None:
                    outcomes[interaction_id] = deserialize_result(result).result
                    finished[interaction_id] = now
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()
    return {i["id"]: outcomes.get(i["id"]) for i in items}, finished


def _bare_generations(count: int, offset: int) -> float:
    """Seconds to answer `count` of the questions with bare llama.cpp, 1 thread, here."""
    sys.path.insert(0, str(ROOT))
    from datetime import UTC, datetime

    from app.llm.generator import Generator
    from app.llm.model_file import resolve_model_path
    from app.llm.prompts import Quote, ask_prompt

    lines = history(60)
    quotes = [
        Quote(f"person{i % 13}", "c0", datetime(2026, 3, 1 + i % 27, tzinfo=UTC), line)
        for i, line in enumerate(lines)
    ]
    generator = Generator(resolve_model_path(None), threads=1)
    generator.load()
    asked = questions(offset + count)[offset:]

    async def answer_all() -> float:
        started = time.monotonic()
        for i, question in enumerate(asked):
            chosen = quotes[(offset + i) * 3 % 40 :][:15]
            prompt = ask_prompt(
                question, chosen, count_tokens=generator.count_tokens, n_ctx=generator.n_ctx
            )
            await generator.generate(prompt.text, max_tokens=prompt.max_tokens, stop=prompt.stop)
        return time.monotonic() - started

    try:
        return asyncio.run(answer_all())
    finally:
        generator.close()


def _bare_ceiling(count: int) -> dict[str, float]:
    """Answers per minute of bare llama.cpp: one process, then two processes at once."""
    import subprocess

    def start(n: int, offset: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.scale", "--bare", str(n), "--offset", str(offset)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )

    def seconds(process: subprocess.Popen[str]) -> float:
        out, _ = process.communicate(timeout=3600)
        if process.returncode != 0:
            raise RuntimeError(f"bare generation failed ({process.returncode})")
        return float(out.strip().splitlines()[-1])

    one = seconds(start(count, 0))
    pair = [start(count // 2, 0), start(count - count // 2, count // 2)]
    two = max(seconds(p) for p in pair)
    return {"bare_one": 60 * count / one, "bare_two": 60 * count / two}


async def run(question_count: int, messages: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from app.cli.redis_server import RedisServer
    from app.llm.model_file import resolve_model_path
    from app.retrieval.embedder import Embedder, default_model_dir
    from app.settings import Settings
    from tests.engines import ChromaServer, PostgresServer, chroma_binary, postgres_bindir
    from tests.fake_discord import DEFAULT_TOKEN, FakeDiscord
    from tests.scaleout.cluster import Cluster
    from tests.signing import Signer

    bindir, chroma = postgres_bindir(), chroma_binary()
    if bindir is None or chroma is None:
        raise SystemExit("bench scale needs PostgreSQL 15 (pg_config) and the chroma command")
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, FakeDiscord() as fake:
        root = Path(tmp)
        models = root / "models"
        Embedder(default_model_dir(), cache_dir=models).load()  # the one-off ONNX export
        redis = RedisServer(root / "redis", persist=False)
        postgres, chroma_server = PostgresServer(bindir, durable=True), ChromaServer(chroma)
        redis.start()
        postgres.start()
        chroma_server.start()
        try:
            guild = fake.add_guild("Benchmark")
            channels = [fake.add_channel(guild["id"], f"c{i}") for i in range(4)]
            lines = history(messages)
            per = messages // len(channels)
            for i, channel in enumerate(channels):
                chunk = lines[i * per : (i + 1) * per]
                fake.add_messages(channel["id"], len(chunk), text=chunk.__getitem__)
            ids = [c["id"] for c in channels]
            base = {
                "DISCORD_API_BASE": fake.api_base,
                "DISCORD_BOT_TOKEN": DEFAULT_TOKEN,
                "DISCORD_APPLICATION_ID": fake.application_id,
                "MODEL_CACHE_DIR": str(models),
                "SYNC_RECHECK_DAYS": "0",
            }
            embedded = Settings.from_env({**base, "DATA_DIR": str(root / "embedded")})
            shared_env = {
                **base,
                "DATABASE_URL": postgres.url(await postgres.create_database()),
                "CHROMA_URL": chroma_server.url,
            }
            shared = Settings.from_env({**shared_env, "DATA_DIR": str(root / "shared")})
            figures["sync_embedded"], synced = await _sync_rate(embedded, ids)
            figures["sync_shared"], _ = await _sync_rate(shared, ids)
            figures["synced"] = float(synced)

            signer = Signer()
            env = {
                **shared_env,
                "REDIS_URL": redis.url,
                "MODEL_PATH": str(resolve_model_path(None)),
                "DISCORD_PUBLIC_KEY": signer.public_key_hex,
                "RATE_LIMIT_PER_MINUTE": "1000",
            }
            cluster = Cluster(env, root)
            channel = {"id": ids[0], "guild_id": guild["id"]}
            asked = questions(question_count)
            try:
                one = await _answers_per_minute(
                    cluster, ["one"], redis.url, fake, signer, channel, asked
                )
                two = await _answers_per_minute(
                    cluster, ["two-a", "two-b"], redis.url, fake, signer, channel, asked
                )
            finally:
                cluster.stop()
        finally:
            chroma_server.stop()
            postgres.stop()
            redis.stop()
    for key, value in one.items():
        figures[f"one_{key}"] = value
    for key, value in two.items():
        figures[f"two_{key}"] = value
    return figures


def main(question_count: int = 24, messages: int = 8000) -> dict[str, float]:
    """Run the benchmark and print its figures as Markdown."""
    figures = asyncio.run(run(question_count, messages))
    figures.update(_bare_ceiling(question_count))
    speedup = figures["two_per_minute"] / figures["one_per_minute"]
    sync_ratio = figures["sync_shared"] / figures["sync_embedded"]
    print(
        f"Scale-out on {os.cpu_count()} cores: {question_count} questions posted at once, "
        f"default model, LLM_THREADS=1 per worker; sync of {figures['synced']:,.0f} messages\n"
    )
    print("| what | figure | target |")
    print("| --- | ---: | --- |")
    print(
        f"| answers per minute, 1 worker: first {question_count} answers | "
        f"{figures['one_per_minute']:.1f} ({figures['one_seconds']:.0f} s) | |"
    )
    print(
        f"| answers per minute, 2 workers: first {question_count} answers | "
        f"{figures['two_per_minute']:.1f} ({figures['two_seconds']:.0f} s; all "
        f"{question_count + EXTRA}: {figures['two_by_two-a']:.0f} + "
        f"{figures['two_by_two-b']:.0f}) | |"
    )
    print(f"| 2 workers / 1 worker | {speedup:.2f}x | >= 1.7x |")
    to_last = figures["two_per_minute_to_last"] / figures["one_per_minute_to_last"]
    print(
        f"| the same to the last of all {question_count + EXTRA} answers, 1 / 2 workers, "
        f"per minute | {figures['one_per_minute_to_last']:.1f} / "
        f"{figures['two_per_minute_to_last']:.1f} = {to_last:.2f}x | |"
    )
    ceiling = figures["bare_two"] / figures["bare_one"]
    print(
        f"| bare llama.cpp, /ask prompts of the same history: 1 process / 2 processes, "
        f"per minute | "
        f"{figures['bare_one']:.1f} / {figures['bare_two']:.1f} | |"
    )
    print(f"| the machine's ceiling, 2 / 1 | {ceiling:.2f}x | |")
    print(f"| 2 workers as a share of that ceiling | {speedup / ceiling:.0%} | |")
    print(
        f"| per answer, 1 / 2 workers: prompt tokens, tokens generated, seconds in llama.cpp | "
        f"{figures['one_llm_prompt_tokens']:.0f} / {figures['two_llm_prompt_tokens']:.0f}, "
        f"{figures['one_llm_tokens']:.1f} / {figures['two_llm_tokens']:.1f}, "
        f"{figures['one_llm_seconds']:.2f} / {figures['two_llm_seconds']:.2f} | |"
    )
    for kind, label in _CPU_LABELS.items():
        one_cpu, two_cpu = figures.get(f"one_cpu_{kind}", 0.0), figures.get(f"two_cpu_{kind}", 0.0)
        print(f"| CPU s per answer, {label}: 1 / 2 workers | {one_cpu:.2f} / {two_cpu:.2f} | |")
    lost = figures["one_lost"] + figures["two_lost"]
    twice = figures["one_not_once"] + figures["two_not_once"]
    print(f"| lost / not exactly once | {lost:.0f} / {twice:.0f} | 0 / 0 |")
    print(f"| sync, SQLite + embedded index | {figures['sync_embedded']:,.0f} msg/s | |")
    print(f"| sync, PostgreSQL + Chroma server | {figures['sync_shared']:,.0f} msg/s | |")
    print(f"| shared / embedded | {sync_ratio:.2f}x | >= 0.7x |")
    figures["speedup"] = speedup
    figures["ceiling"] = ceiling
    figures["sync_ratio"] = sync_ratio
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--messages", type=int, default=8000)
    parser.add_argument("--bare", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        print(f"{_bare_generations(args.bare, args.offset):.3f}")
    else:
        main(args.questions, args.messages)
