"""Front-door benchmark: our endpoint against its peers, PINGs and /ask deferrals under wrk.

`python -m bench.frontdoor [--quick]` starts a real redis-server and these
servers, each pinned to CPU 1, and loads one at a time with wrk pinned to
CPU 0 over 32 connections:

- ours: `python -m app web`, POST /interactions;
- hikari: hikari's `RESTBot` interaction server, deferring every command;
- hikari-arq: the same, enqueuing an arq `handle_interaction` job first;
- flask: `discord_interactions.verify_key` in a minimal Flask app under waitress;
- floor: not a peer but a bound: uvicorn set up as ours, answering from the
  protocol as ours does, with pynacl's check, the type read and the answer,
  nothing else (no replay check, metrics or Redis);
- floor-asgi: the same as a bare ASGI app, through uvicorn's request cycle.

(bench.peers holds the peers and how each is set up; bench.peer_wrk the wrk
script.) Every server gets the same interaction bodies, signed the same way
with a fresh timestamp, through the same wrk script; only the request path and
port differ. Each /ask carries its own interaction id and its own user id, so
our rate limit (5 a minute per user) never trips and every deferral by ours or
hikari-arq is a real enqueue: Redis is flushed before every /ask run, and our
queue bound (QUEUE_LIMIT) is set out of reach, since no worker drains the queue.

Each server is warmed up once, then PING and /ask are each measured RUNS times
(4 runs of 5 s; `--quick` or BENCH_QUICK=1: 1 run of 2 s), the runs going
round the servers so that a change in the machine's load between runs falls on
all of them alike, each round starting with the next server (going first costs
a few percent, so each server goes first once). Every figure is the median over
the runs, and each peer's ratio is ours over its figure from the same invocation.
An /ask run sends a fixed number of distinct requests, sized from the warm-up's rate to last about
one run, then only PINGs until every /ask has been answered; its rate is the
deferrals over the span from the first /ask sent to the last one answered,
timed inside wrk alike for every server. For the servers that enqueue, the new
jobs in Redis are checked against the deferrals wrk counted, one for one.
Server CPU per request, read from /proc for the server process, is the figure
least disturbed by other load on the machine. Our cold start and RSS are
measured as before, with no other server running.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from nacl.signing import SigningKey

from app.jobs import QUEUE_NAMES
from bench.peer_wrk import WrkResult, run_wrk, write_requests

SERVER_CPU = 1
LOADGEN_CPU = 0
CONNECTIONS = 32
COLD_START_RUNS = 3
PING_VARIANTS = 2_000
# Distinct /ask bodies cycled through while warming up, before the measured ones.
WARM_ASKS = 30_000


@dataclass(frozen=True)
class Plan:
    """How often and how long each (server, mode) is measured."""

    runs: int = 4
    duration_s: int = 5
    warmup_s: int = 2

    @classmethod
    def from_env(cls, env: Mapping[str, str], argv: Sequence[str]) -> Plan:
        """The default plan, or a quick one for `--quick` or BENCH_QUICK=1."""
        if "--quick" in argv or env.get("BENCH_QUICK", "0") not in ("", "0"):
            return cls(runs=1, duration_s=2, warmup_s=1)
        return cls()


@dataclass(frozen=True)
class Server:
    """One front door under test: how it starts and where it takes interactions."""

    name: str
    title: str
    argv: tuple[str, ...]
    path: str
    enqueues: bool


# Exactly what a server owner runs for the front door.
OURS: Final = Server(
    "ours", "ours (Starlette, uvicorn)", ("-m", "app", "web"), "/interactions", True
)
SERVERS: Final = (
    OURS,
    # hikari's README asks for `python -O` in production.
    Server("hikari", "hikari RESTBot", ("-O", "-m", "bench.peers", "hikari"), "/", False),
    Server(
        "hikari-arq", "hikari RESTBot + arq", ("-O", "-m", "bench.peers", "hikari-arq"), "/", True
    ),
    Server(
        "flask",
        "Flask + discord-interactions, waitress",
        ("-m", "bench.peers", "flask"),
        "/interactions",
        False,
    ),
    Server(
        "floor",
        "floor: uvicorn + pynacl, nothing else",
        ("-m", "bench.peers", "floor"),
        "/interactions",
        False,
    ),
    Server(
        "floor-asgi",
        "floor as an ASGI app",
        ("-m", "bench.peers", "floor-asgi"),
        "/interactions",
        False,
    ),
)


@dataclass
class Rig:
    """What every measurement shares: the key, Redis, the scratch folder and the plan."""

    key: SigningKey
    env: dict[str, str]
    store: Any
    workdir: Path
    plan: Plan

    @property
    def log(self) -> Path:
        """Where the servers' output goes."""
        return self.workdir / "server.log"


def _pin(cpu: int) -> Callable[[], None]:
    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def _body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _raw_request(
    key: SigningKey, port: int, path: str, body: bytes, *, forged: bool = False
) -> bytes:
    stamp = str(int(time.time())).encode()
    signed = stamp + body + (b" " if forged else b"")
    signature = key.sign(signed).signature.hex().encode()
    head = (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Content-Type: application/json\r\nX-Signature-Ed25519: %s\r\n"
        b"X-Signature-Timestamp: %s\r\nContent-Length: %d\r\n\r\n"
    ) % (path.encode(), port, signature, stamp, len(body))
    return head + body


def _ask(index: int) -> dict[str, Any]:
    """An /ask interaction as Discord sends it, with its own id and user."""
    return {
        "app_permissions": "562949953421311",
        "application_id": "1000000000000000000",
        "attachment_size_limit": 10_485_760,
        "authorizing_integration_owners": {"0": "3300000000000000001"},
        "channel": {
            "flags": 0,
            "guild_id": "3300000000000000001",
            "id": "4400000000000000001",
            "last_message_id": "1290000000000000001",
            "name": "general",
            "nsfw": False,
            "parent_id": None,
            "permissions": "562949953421311",
            "position": 0,
            "rate_limit_per_user": 0,
            "topic": None,
            "type": 0,
        },
        "channel_id": "4400000000000000001",
        "context": 0,
        "data": {
            "id": "5500000000000000001",
            "name": "ask",
            "options": [{"name": "question", "type": 3, "value": "what did we decide about it?"}],
            "type": 1,
        },
        "entitlements": [],
        "guild_id": "3300000000000000001",
        "guild_locale": "en-US",
        "id": str(1_300_000_000_000_000_000 + index),
        "locale": "en-US",
        "member": {
            "avatar": None,
            "deaf": False,
            "flags": 0,
            "joined_at": "2024-03-31T12:10:19.616000+00:00",
            "mute": False,
            "nick": None,
            "pending": False,
            "permissions": "2199023255551",
            "roles": ["561885635074457600"],
            "user": {
                "avatar": "2549318b6a5f514a6c4a4379ed89a469",
                "discriminator": "0",
                "global_name": "Someone",
                "id": str(1_200_000_000_000_000_000 + index),
                "public_flags": 0,
                "username": "someone",
            },
        },
        "token": "aW50ZXJhY3Rpb246" + "x" * 160,
        "type": 2,
        "version": 1,
    }


class Bodies:
    """Interaction bodies, built once and shared by every server."""

    def __init__(self) -> None:
        self.pings = [_body({"type": 1, "id": str(i)}) for i in range(PING_VARIANTS)]
        self._asks: list[bytes] = []

    def asks(self, start: int, count: int) -> list[bytes]:
        """The /ask bodies numbered start to start + count - 1."""
        while len(self._asks) < start + count:
            self._asks.append(_body(_ask(len(self._asks))))
        return self._asks[start : start + count]


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _status(port: int, raw: bytes) -> int:
    """Send one request on a fresh connection; the HTTP status, or 0 without an answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(raw)
            line = sock.recv(64)
    except OSError:
        return 0
    match = re.match(rb"HTTP/1\.[01] (\d{3})", line)
    return int(match.group(1)) if match else 0


def _wait_for(port: int, raw: bytes, deadline: float) -> None:
    while time.monotonic() < deadline:
        if _status(port, raw) == 200:
            return
        time.sleep(0.002)
    raise RuntimeError(f"the server on port {port} never answered 200")


def _start(server: Server, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, *server.argv],
            env=env,
            stdout=sink,
            stderr=sink,
            preexec_fn=_pin(SERVER_CPU),
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _cold_start(rig: Rig) -> tuple[float, float]:
    """Median seconds from exec to our first 200 on /health, and the RSS (MB) then."""
    import psutil

    from app.cli.redis_server import free_port

    health = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    times, rss = [], []
    for _ in range(COLD_START_RUNS):
        port = free_port()
        started = time.monotonic()
        process = _start(OURS, {**rig.env, "PORT": str(port)}, rig.log)
        try:
            _wait_for(port, health, started + 20)
            times.append(time.monotonic() - started)
            rss.append(psutil.Process(process.pid).memory_info().rss / 2**20)
        finally:
            _stop(process)
    return statistics.median(times), statistics.median(rss)


@dataclass
class Running:
    """A started server: its process, its port and the /ask stream sized for it."""

    server: Server
    process: subprocess.Popen[bytes]
    port: int
    ask_count: int = 0

    def request(self, key: SigningKey, body: bytes, *, forged: bool = False) -> bytes:
        """The raw request carrying `body`, signed now, to this server's path and port."""
        return _raw_request(key, self.port, self.server.path, body, forged=forged)


def _wrk(
    rig: Rig, running: Running, requests: Path, mode: str, limit: int, seconds: int
) -> WrkResult:
    return run_wrk(
        rig.workdir,
        running.port,
        requests,
        mode=mode,
        limit=limit,
        seconds=seconds,
        connections=CONNECTIONS,
        cpu=LOADGEN_CPU,
    )


def _pings(rig: Rig, running: Running, bodies: Bodies) -> Path:
    # Written afresh for every run, so no signature outlives our freshness window.
    return write_requests(
        rig.workdir / "pings.req", [running.request(rig.key, body) for body in bodies.pings]
    )


def _launch(rig: Rig, server: Server, bodies: Bodies) -> Running:
    """Start a server, wait for its first PONG, note its RSS and how it answers a forgery."""
    from app.cli.redis_server import free_port

    port = free_port()
    process = _start(server, {**rig.env, "PORT": str(port)}, rig.log)
    running = Running(server, process, port)
    try:
        _wait_for(port, running.request(rig.key, bodies.pings[0]), time.monotonic() + 30)
    except BaseException:
        _stop(process)
        raise
    return running


def _warm_up(rig: Rig, running: Running, bodies: Bodies) -> dict[str, float]:
    """Warm a server up on PINGs and /asks, and size its /ask stream from the rate seen."""
    import psutil

    figures: dict[str, float] = {
        "rss_mb": psutil.Process(running.process.pid).memory_info().rss / 2**20,
        "bad_signature_status": _status(
            running.port, running.request(rig.key, bodies.pings[0], forged=True)
        ),
    }
    _wrk(rig, running, _pings(rig, running, bodies), "ping", 0, rig.plan.warmup_s)
    warm = write_requests(
        rig.workdir / "warm.req",
        [running.request(rig.key, body) for body in bodies.asks(0, WARM_ASKS)],
    )
    estimate = _wrk(rig, running, warm, "ping", 0, rig.plan.warmup_s)
    per_second = estimate.requests / (estimate.duration_us / 1e6)
    running.ask_count = max(int(per_second * rig.plan.duration_s), 1)
    return figures


def _ping_run(rig: Rig, running: Running, bodies: Bodies) -> dict[str, float]:
    pings = _pings(rig, running, bodies)
    pid = running.process.pid
    cpu = _cpu_seconds(pid)
    run = _wrk(rig, running, pings, "ping", 0, rig.plan.duration_s)
    cpu = _cpu_seconds(pid) - cpu
    return {
        "per_s": run.requests / (run.duration_us / 1e6),
        "p50_ms": run.p50_us / 1000,
        "p99_ms": run.p99_us / 1000,
        "cpu_us": cpu / max(run.requests, 1) * 1e6,
        "errors": run.errors,
    }


def _ask_run(rig: Rig, running: Running, bodies: Bodies) -> dict[str, float]:
    count = running.ask_count
    asks = [running.request(rig.key, body) for body in bodies.asks(WARM_ASKS, count)]
    asks.append(running.request(rig.key, bodies.pings[0]))
    ask_file = write_requests(rig.workdir / "asks.req", asks)
    # Every run's /asks are new jobs to Redis, and only this run's are counted.
    rig.store.flushall()
    pid = running.process.pid
    cpu = _cpu_seconds(pid)
    # The bound only matters when a server falls far behind its warm-up rate.
    run = _wrk(rig, running, ask_file, "ask", count, rig.plan.duration_s * 4 + 5)
    cpu = _cpu_seconds(pid) - cpu
    figures = {
        "per_s": run.deferred / (run.stream_us / 1e6) if run.stream_us else 0.0,
        "p50_ms": run.p50_us / 1000,
        "p99_ms": run.p99_us / 1000,
        "cpu_us": cpu / max(run.deferred, 1) * 1e6,
        "errors": run.errors,
        "deferred": run.deferred,
        "not_deferred": run.other,
        "unanswered": count - run.deferred - run.other,
    }
    if running.server.enqueues:
        # /ask waits in the answer queue; count both, as the queue limit does.
        figures["queued_jobs"] = sum(int(rig.store.zcard(name)) for name in QUEUE_NAMES)
    return figures


_SUMMED: Final = frozenset({"errors", "deferred", "not_deferred", "unanswered", "queued_jobs"})


def _combine(mode: str, runs: list[dict[str, float]]) -> dict[str, float]:
    """Medians of the rates and latencies over the runs; totals of the counts."""
    figures: dict[str, float] = {}
    for key in runs[0]:
        values = [run[key] for run in runs]
        if key in _SUMMED:
            figures[f"{mode}_{key}"] = sum(values)
        else:
            figures[f"{mode}_{key}"] = statistics.median(values)
    return figures


def measure(rig: Rig, bodies: Bodies) -> dict[str, dict[str, float]]:
    """Every server's figures: all started, then each run goes round them one at a time."""
    started: list[Running] = []
    try:
        for server in SERVERS:
            started.append(_launch(rig, server, bodies))
        figures = {running.server.name: _warm_up(rig, running, bodies) for running in started}
        pings: dict[str, list[dict[str, float]]] = {server.name: [] for server in SERVERS}
        asks: dict[str, list[dict[str, float]]] = {server.name: [] for server in SERVERS}
        # Round robin, so that a change in the machine's load between runs
        # weighs on every server alike rather than on whichever ran then; each
        # round starts with the next server, since going first costs a few percent.
        for run in range(rig.plan.runs):
            shift = run % len(started)
            order = started[shift:] + started[:shift]
            for running in order:
                pings[running.server.name].append(_ping_run(rig, running, bodies))
            for running in order:
                asks[running.server.name].append(_ask_run(rig, running, bodies))
    finally:
        for running in started:
            _stop(running.process)
    for name, measured in figures.items():
        measured |= _combine("ping", pings[name]) | _combine("ask", asks[name])
    return figures


def _ratios(figures: dict[str, float], name: str) -> dict[str, float]:
    ratios = {}
    for mode in ("ping", "ask"):
        for key in ("per_s", "p50_ms", "p99_ms"):
            peer = figures[f"{name}.{mode}_{key}"]
            ratios[f"{name}.{mode}_{key}_ratio"] = figures[f"{mode}_{key}"] / peer if peer else 0.0
    return ratios


def run(plan: Plan) -> dict[str, float]:
    """Run every measurement and return the figures: ours unprefixed, a peer's as `NAME.key`."""
    import redis

    from app.cli.redis_server import RedisServer

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get update && apt-get install -y wrk (as root)")
    key = SigningKey.generate()
    with (
        tempfile.TemporaryDirectory(prefix="frontdoor-") as tmp,
        RedisServer(Path(tmp) / "redis", persist=True) as redis_server,
    ):
        env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "DISCORD_PUBLIC_KEY": bytes(key.verify_key).hex(),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
            "HOST": "127.0.0.1",
            "DATA_DIR": str(Path(tmp) / "data"),
            # No worker drains the queue here: a bound it can never reach keeps
            # the check on the hot path without answering "busy".
            "QUEUE_LIMIT": "1000000",
        }
        store = redis.Redis.from_url(redis_server.url)
        rig = Rig(key=key, env=env, store=store, workdir=Path(tmp), plan=plan)
        try:
            cold_s, rss_mb = _cold_start(rig)
            measured = measure(rig, Bodies())
        finally:
            store.close()
    figures: dict[str, float] = {}
    for server in SERVERS:
        prefix = "" if server is OURS else f"{server.name}."
        figures |= {prefix + name: value for name, value in measured[server.name].items()}
    figures |= {"cold_start_s": cold_s, "rss_mb": rss_mb}
    figures |= {"runs": plan.runs, "run_s": plan.duration_s}
    for server in SERVERS[1:]:
        figures |= _ratios(figures, server.name)
    return figures


def table(figures: dict[str, float]) -> str:
    """Our figures as a Markdown table beside their targets."""
    rows = [
        (
            "PING",
            f"{figures['ping_per_s']:,.0f}/s",
            f"{figures['ping_p50_ms']:.2f} ms",
            f"{figures['ping_p99_ms']:.2f} ms",
            f"{figures['ping_cpu_us']:.0f} us",
            ">= 12,000/s",
        ),
        (
            "/ask deferral",
            f"{figures['ask_per_s']:,.0f}/s",
            f"{figures['ask_p50_ms']:.2f} ms",
            f"{figures['ask_p99_ms']:.2f} ms",
            f"{figures['ask_cpu_us']:.0f} us",
            ">= 4,000/s, p99 < 10 ms",
        ),
    ]
    lines = [
        "| what | throughput | p50 | p99 | server CPU per request | target |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    lines.append(
        f"| cold start to first /health 200 | {figures['cold_start_s']:.3f} s | | | | < 0.6 s |"
    )
    lines.append(f"| RSS after start | {figures['rss_mb']:.1f} MB | | | | < 60 MB |")
    lines.append(
        f"\n/ask: {figures['ask_deferred']:.0f} deferrals, {figures['ask_queued_jobs']:.0f} jobs"
        f" queued, {figures['ask_not_deferred']:.0f} other answers, {figures['ask_errors']:.0f}"
        " errors"
    )
    return "\n".join(lines)


def peers_table(figures: dict[str, float]) -> str:
    """Every server's figures side by side, with ours over each peer's."""
    lines = [
        f"Against its peers: medians of {figures['runs']:.0f} run(s) of {figures['run_s']:.0f} s"
        " per row, same machine, same wrk script and payloads, one server loaded at a time.",
        "",
        "| server | mode | requests/s | p50 | p99 | server CPU per request"
        " | ours/peer requests/s | ours/peer p50 | ours/peer p99 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    checks = []
    for server in SERVERS:
        prefix = "" if server is OURS else f"{server.name}."
        for mode, label in (("ping", "PING"), ("ask", "/ask deferral")):
            ratios = [
                1.0 if server is OURS else figures[f"{prefix}{mode}_{key}_ratio"]
                for key in ("per_s", "p50_ms", "p99_ms")
            ]
            lines.append(
                f"| {server.title} | {label} | {figures[f'{prefix}{mode}_per_s']:,.0f}"
                f" | {figures[f'{prefix}{mode}_p50_ms']:.2f} ms"
                f" | {figures[f'{prefix}{mode}_p99_ms']:.2f} ms"
                f" | {figures[f'{prefix}{mode}_cpu_us']:.0f} us | "
                + " | ".join(f"{ratio:.2f}" for ratio in ratios)
                + " |"
            )
        queued = (
            f", {figures[f'{prefix}ask_queued_jobs']:.0f} jobs queued" if server.enqueues else ""
        )
        checks.append(
            f"- {server.name}: /ask {figures[f'{prefix}ask_deferred']:.0f} deferrals{queued},"
            f" {figures[f'{prefix}ask_not_deferred']:.0f} other answers,"
            f" {figures[f'{prefix}ask_unanswered']:.0f} unanswered,"
            f" {figures[f'{prefix}ask_errors'] + figures[f'{prefix}ping_errors']:.0f} errors;"
            f" bad signature answered {figures[f'{prefix}bad_signature_status']:.0f};"
            f" RSS after start {figures[f'{prefix}rss_mb']:.1f} MB"
        )
    return "\n".join([*lines, "", *checks])


def mismatches(figures: dict[str, float]) -> list[str]:
    """The enqueuing servers whose queued jobs differ from the deferrals wrk counted."""
    found = []
    for server in SERVERS:
        prefix = "" if server is OURS else f"{server.name}."
        if (
            server.enqueues
            and figures[f"{prefix}ask_queued_jobs"] != figures[f"{prefix}ask_deferred"]
        ):
            found.append(server.name)
    return found


def main() -> dict[str, float]:
    """Print the Markdown tables and return the figures."""
    figures = run(Plan.from_env(os.environ, sys.argv[1:]))
    print(table(figures))
    print()
    print(peers_table(figures))
    for name in mismatches(figures):
        print(f"MISMATCH: {name}: queued jobs differ from deferrals", file=sys.stderr)
    return figures


if __name__ == "__main__":
    main()
