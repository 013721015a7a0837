"""A flood of /ask: many signed interactions at once against `python -m app run`.

    python -m bench.load [--count 500] [--floods 5]   (or LOAD_COUNT, LOAD_FLOODS)

A local fake Discord (in this process) holds a synced channel; `python -m app
run` (embedded Redis, web, worker, the bundled models) answers. All the /ask
interactions, from distinct users, are sent at once. Measured: how fast each
was acknowledged (Discord allows 3 s), how many were deferred and how many
were told the bot is busy, how long until every deferred one shows its final
answer (none left "thinking..."), how many answers were errors, whether the
queue drained, and the resident memory of the web and worker processes,
sampled throughout. The same flood is then sent again (`--floods` in all):
memory that levels off stays where the first flood left it, and memory that
leaks grows by about the same amount with every flood.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import psutil
import redis

from bench.answer import QUESTIONS, app_env, seed_channel, wait_http

ROOT = Path(__file__).resolve().parents[1]
# Discord gives an interaction token 15 minutes; no answer can land after that.
ANSWER_TIMEOUT = 15 * 60.0
WARMUP_ASKS = 3
SAMPLE_INTERVAL = 0.5
# Read and view history, so every asker may see the channel.
PERMISSIONS = (1 << 10) | (1 << 16)
ERROR_MARKERS = ("Sorry, I couldn't answer", "error id", "went wrong")


@dataclass
class MemorySampler:
    """Samples the RSS of named processes in a background thread."""

    processes: dict[str, psutil.Process]
    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin sampling every SAMPLE_INTERVAL seconds."""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> dict[str, int]:
        """Take one sample now and return it (bytes by process name)."""
        now = time.monotonic()
        taken = {}
        for name, process in self.processes.items():
            try:
                rss = int(process.memory_info().rss)
            except psutil.Error:
                continue
            self.samples.setdefault(name, []).append((now, rss))
            taken[name] = rss
        return taken

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def peak(self, name: str, since: float) -> int:
        """The highest RSS of `name` sampled after `since`."""
        return max((rss for at, rss in self.samples.get(name, []) if at >= since), default=0)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.sample()


@dataclass
class Sent:
    """One /ask as sent, and how the front door answered it."""

    interaction_id: str
    token: str
    latency: float
    status: int
    kind: str  # "deferred", "busy", or what else came back


def _children(parent: psutil.Process, timeout: float) -> dict[str, psutil.Process]:
    """The web and worker processes that `python -m app run` started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {}
        for child in parent.children(recursive=True):
            try:
                command = child.cmdline()
            except psutil.Error:
                continue
            for role in ("web", "worker"):
                if command[-3:] == ["-m", "app", role]:
                    found[role] = child
        if len(found) == 2:
            return found
        time.sleep(0.1)
    raise RuntimeError("the web and worker processes did not start")


def _payload(
    fake: Any, guild: dict[str, Any], channel: dict[str, Any], n: int, make: Callable[..., Any]
) -> dict[str, Any]:
    from app.discord.snowflakes import time_snowflake

    payload: dict[str, Any] = make(
        "ask",
        {"question": QUESTIONS[n % len(QUESTIONS)]},
        interaction_id=str(time_snowflake(time.time(), n % (1 << 22))),
        user_id=str(7_000_000 + n),
        permissions=PERMISSIONS,
    )
    payload.update(
        guild_id=guild["id"],
        channel_id=channel["id"],
        application_id=fake.application_id,
        token=f"load-token-{n}-abcdefghijklmnopqrstuvwxyz",
    )
    return payload


def _kind(body: Any) -> str:
    if not isinstance(body, dict):
        return "not json"
    if body.get("type") == 5:
        return "deferred"
    content = str((body.get("data") or {}).get("content", ""))
    if body.get("type") == 4 and "busy" in content:
        return "busy"
    return f"type {body.get('type')}: {content[:60]}"


async def _send_all(base: str, signer: Any, payloads: list[dict[str, Any]]) -> list[Sent]:
    from tests.signing import encode

    bodies = [encode(p) for p in payloads]
    # Signed up front so the flood is only HTTP, as Discord's would be.
    signed = [
        (p["id"], p["token"], b, signer.headers(b)) for p, b in zip(payloads, bodies, strict=True)
    ]
    limits = httpx.Limits(max_connections=len(signed), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60.0) as http:
        start = asyncio.Event()

        async def one(
            interaction_id: str, token: str, body: bytes, headers: dict[str, str]
        ) -> Sent:
            await start.wait()
            started = time.monotonic()
            try:
                response = await http.post("/interactions", content=body, headers=headers)
            except httpx.HTTPError as exc:
                failed = type(exc).__name__
                return Sent(interaction_id, token, time.monotonic() - started, 0, failed)
            latency = time.monotonic() - started
            try:
                kind = _kind(json.loads(response.content))
            except ValueError:
                kind = "not json"
            return Sent(interaction_id, token, latency, response.status_code, kind)

        tasks = [asyncio.create_task(one(*s)) for s in signed]
        await asyncio.sleep(0.1)
        start.set()
        return await asyncio.gather(*tasks)


def _shown(fake: Any, token: str) -> str:
    """What the interaction's original message shows now."""
    delivered = fake.interaction(token)
    return str(delivered.original["content"]) if delivered.original else ""


def _thinking(content: str) -> bool:
    """Still "thinking...": nothing shown yet, or a progress edit (they end with an ellipsis)."""
    return not content or content.endswith("…")


def _wait_answers(
    fake: Any, client: redis.Redis, asks: dict[str, str], timeout: float
) -> tuple[dict[str, str], float]:
    """Wait until the worker has finished every ask (id -> token); (token -> shown, seconds).

    A job's arq result is written once its handler returned, so after its last
    message to Discord.
    """
    from app.jobs import RESULT_KEY_PREFIX

    started = time.monotonic()
    answers: dict[str, str] = {}
    pending = dict(asks)
    while pending and time.monotonic() - started < timeout:
        ids = list(pending)
        done = client.pipeline(transaction=False)
        for interaction_id in ids:
            done.exists(RESULT_KEY_PREFIX + interaction_id)
        for interaction_id, finished in zip(ids, done.execute(), strict=True):
            if finished:
                token = pending.pop(interaction_id)
                answers[token] = _shown(fake, token)
        if pending:
            time.sleep(0.2)
    return answers, time.monotonic() - started


def _queue_length(client: redis.Redis) -> int:
    from app.jobs import QUEUE_NAMES

    # /ask waits in the answer queue; the general one holds the rest.
    return sum(cast(int, client.zcard(name)) for name in QUEUE_NAMES)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(count: int = 500, floods: int = 5) -> dict[str, float]:
    """Flood `python -m app run` with `count` /ask; print a Markdown table, return the figures."""
    sys.path.insert(0, str(ROOT))
    from app.cli.foreground import sync
    from app.cli.redis_server import free_port
    from app.cli.supervisor import embedded_redis_socket
    from app.settings import Settings
    from tests.fake_discord import FakeDiscord
    from tests.signing import Signer, command

    signer = Signer()
    with tempfile.TemporaryDirectory() as tmp, FakeDiscord() as fake:
        guild, channel = seed_channel(fake, "Load")
        env = app_env(fake, signer, Path(tmp) / "data", METRICS_PORT=str(free_port()))
        env.pop("REDIS_URL", None)
        settings = Settings.from_env(env)
        asyncio.run(sync(settings, [guild["id"]], []))
        log_path = Path(tmp) / "app.log"
        with log_path.open("wb") as log:
            app = subprocess.Popen(
                [sys.executable, "-m", "app", "run"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            figures = _run(
                fake,
                signer,
                settings,
                app,
                guild,
                channel,
                count,
                floods,
                command,
                embedded_redis_socket,
            )
        except Exception:
            print(log_path.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            app.send_signal(signal.SIGTERM)
            try:
                app.wait(timeout=60)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
    _print(figures)
    return figures


def _run(
    fake: Any,
    signer: Any,
    settings: Any,
    app: subprocess.Popen[bytes],
    guild: dict[str, Any],
    channel: dict[str, Any],
    count: int,
    floods: int,
    command: Callable[..., Any],
    socket_of: Callable[[Any], Path],
) -> dict[str, float]:
    base = f"http://{settings.host}:{settings.port}"
    wait_http(f"{base}/health", 180)
    sampler = MemorySampler(_children(psutil.Process(app.pid), 30))
    start_rss = sampler.sample()
    client = redis.Redis(unix_socket_path=str(socket_of(settings)))
    try:
        # A few asks one at a time load the models and fill the caches.
        for i in range(WARMUP_ASKS):
            payload = _payload(fake, guild, channel, count + i, command)
            first = asyncio.run(_send_all(base, signer, [payload]))[0]
            if first.kind != "deferred":
                raise RuntimeError(f"warm-up ask not deferred: {first.kind}")
            done, waited = _wait_answers(fake, client, {payload["id"]: payload["token"]}, 180)
            if not done:
                raise RuntimeError(f"warm-up ask unanswered after {waited:.0f} s")
        warm_rss = sampler.sample()
        sampler.start()
        flood_started = time.monotonic()
        sent, deferred, answers, drained, queue_left = _flood(
            fake, signer, base, client, guild, channel, range(count), command
        )
        flood_to_done = time.monotonic() - flood_started
        after_floods = [sampler.sample()]
        # The same flood again: memory that keeps growing would show here, not level off.
        repeats = []
        for flood in range(1, floods):
            offset = flood * (count + 100)
            indexes = range(offset, offset + count)
            repeats.append(_flood(fake, signer, base, client, guild, channel, indexes, command))
            after_floods.append(sampler.sample())
    finally:
        client.close()
    sampler.stop()
    latencies = [s.latency for s in sent]
    other = [s for s in sent if s.kind not in ("deferred", "busy")]
    for s in other[:5]:
        print(f"unexpected answer ({s.status}): {s.kind}", file=sys.stderr)
    for shown in [a for a in answers.values() if _thinking(a)][:3]:
        print(f"left thinking: {shown[-200:]!r}", file=sys.stderr)
    mib = 1024 * 1024
    figures = {
        "count": float(count),
        "queue_limit": float(settings.queue_limit),
        "deferral_ms_p50": statistics.median(latencies) * 1000,
        "deferral_ms_p99": _percentile(latencies, 0.99) * 1000,
        "deferral_ms_max": max(latencies) * 1000,
        "over_3s": float(sum(1 for x in latencies if x > 3.0)),
        "deferred": float(len(deferred)),
        "busy": float(sum(1 for s in sent if s.kind == "busy")),
        "other": float(len(other)),
        "answered": float(len(answers)),
        "unfinished": float(len(deferred) - len(answers)),
        "thinking": float(sum(1 for a in answers.values() if _thinking(a))),
        "error_answers": float(
            sum(1 for a in answers.values() if any(m in a for m in ERROR_MARKERS))
        ),
        "all_answered_s": drained,
        "flood_to_done_s": flood_to_done,
        "queue_left": float(queue_left),
        "floods": float(floods),
    }
    for flood, again in enumerate(repeats, start=2):
        figures[f"flood{flood}_deferral_ms_p99"] = (
            _percentile([s.latency for s in again[0]], 0.99) * 1000
        )
        figures[f"flood{flood}_deferred"] = float(len(again[1]))
        figures[f"flood{flood}_answered"] = float(len(again[2]))
        figures[f"flood{flood}_queue_left"] = float(again[4])
    for role in ("web", "worker"):
        figures[f"{role}_rss_start_mib"] = start_rss.get(role, 0) / mib
        figures[f"{role}_rss_warm_mib"] = warm_rss.get(role, 0) / mib
        figures[f"{role}_rss_peak_mib"] = sampler.peak(role, flood_started) / mib
        for flood, sample in enumerate(after_floods, start=1):
            figures[f"{role}_rss_flood{flood}_mib"] = sample.get(role, 0) / mib
    return figures


def _flood(
    fake: Any,
    signer: Any,
    base: str,
    client: redis.Redis,
    guild: dict[str, Any],
    channel: dict[str, Any],
    indexes: range,
    command: Callable[..., Any],
) -> tuple[list[Sent], dict[str, str], dict[str, str], float, int]:
    """Send every /ask at once and wait until the deferred ones are answered and the queue empties.

    Returns what each request got, the deferred ids with their tokens, the final answers,
    the seconds until the last answer, and the jobs still queued at the end.
    """
    payloads = [_payload(fake, guild, channel, i, command) for i in indexes]
    sent = asyncio.run(_send_all(base, signer, payloads))
    deferred = {s.interaction_id: s.token for s in sent if s.kind == "deferred"}
    answers, drained = _wait_answers(fake, client, deferred, ANSWER_TIMEOUT)
    deadline = time.monotonic() + 30
    queue_left = _queue_length(client)
    while queue_left and time.monotonic() < deadline:
        time.sleep(0.5)
        queue_left = _queue_length(client)
    return sent, deferred, answers, drained, queue_left


def _print(f: dict[str, float]) -> None:
    limit = "none" if f["queue_limit"] == 0 else f"{f['queue_limit']:.0f}"
    print(
        f"{f['count']:.0f} concurrent /ask (distinct users) against `python -m app run`, "
        f"bundled Gemma 3 270M, QUEUE_LIMIT {limit}\n"
    )
    print("| what | figure |")
    print("| --- | ---: |")
    print(
        f"| deferral p50 / p99 / max | {f['deferral_ms_p50']:.0f} / {f['deferral_ms_p99']:.0f} / "
        f"{f['deferral_ms_max']:.0f} ms |"
    )
    print(f"| acknowledged after more than 3 s | {f['over_3s']:.0f} |")
    print(
        f"| deferred / told busy / other | {f['deferred']:.0f} / {f['busy']:.0f} / "
        f"{f['other']:.0f} |"
    )
    print(
        f"| every deferred /ask finished after | {f['all_answered_s']:.0f} s "
        f"({f['answered']:.0f} finished, {f['unfinished']:.0f} not) |"
    )
    print(f'| finished but left showing "thinking" | {f["thinking"]:.0f} |')
    print(f"| answers that were errors | {f['error_answers']:.0f} |")
    print(f"| jobs left in the queue at the end | {f['queue_left']:.0f} |")
    floods = range(1, int(f["floods"]) + 1)
    for flood in floods[1:]:
        print(
            f"| the same flood again (flood {flood}): deferral p99, deferred, finished, "
            f"left in the queue | {f[f'flood{flood}_deferral_ms_p99']:.0f} ms, "
            f"{f[f'flood{flood}_deferred']:.0f}, {f[f'flood{flood}_answered']:.0f}, "
            f"{f[f'flood{flood}_queue_left']:.0f} |"
        )
    after = " / ".join(str(n) for n in floods)
    for role in ("web", "worker"):
        sizes = " / ".join(f"{f[f'{role}_rss_flood{n}_mib']:.0f}" for n in floods)
        print(
            f"| {role} RSS start / after warm-up / peak / after flood {after} | "
            f"{f[f'{role}_rss_start_mib']:.0f} / {f[f'{role}_rss_warm_mib']:.0f} / "
            f"{f[f'{role}_rss_peak_mib']:.0f} / {sizes} MiB |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=int(os.environ.get("LOAD_COUNT", "500")))
    parser.add_argument("--floods", type=int, default=int(os.environ.get("LOAD_FLOODS", "5")))
    arguments = parser.parse_args()
    if arguments.floods < 1:
        parser.error("--floods must be at least 1")
    main(arguments.count, arguments.floods)
