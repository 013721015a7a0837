"""Front-door benchmark: PINGs and /ask deferrals per second under wrk, and cold start.

`python -m bench.frontdoor` starts a real redis-server, serves the app under
uvicorn (httptools + uvloop) pinned to CPU 1, and drives it with wrk pinned to
CPU 0 over 32 connections. Every request is signed; each /ask carries its own
interaction id and its own user id, so the default rate limit (5 a minute)
never trips and every deferral is a real enqueue.

The /ask run sends a fixed number of distinct requests sized to last about ten
seconds, then only PINGs until every /ask has been answered, so the jobs in
the queue can be checked against the deferrals wrk counted, one for one.
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
from pathlib import Path
from typing import Any, cast

from nacl.signing import SigningKey

SERVER_CPU = 1
LOADGEN_CPU = 0
CONNECTIONS = 32
DURATION_S = 10
WARMUP_S = 3
COLD_START_RUNS = 3
PING_VARIANTS = 2_000

_LUA = r"""
local path, mode, limit = "%(path)s", "%(mode)s", %(limit)d
local requests, ping = {}, nil
sent, answered, deferred, other = 0, 0, 0, 0
local threads = {}

function setup(thread) table.insert(threads, thread) end

function init(args)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  while pos <= #data do
    local nl = string.find(data, "\n", pos, true)
    local n = tonumber(string.sub(data, pos, nl - 1))
    table.insert(requests, string.sub(data, nl + 1, nl + n))
    pos = nl + n + 1
  end
  ping = requests[#requests]
  if mode == "ask" then requests[#requests] = nil end
end

local primed = false

function request()
  -- wrk calls request() once before connecting and never sends that one.
  if not primed then primed = true; return ping end
  sent = sent + 1
  if mode == "ask" and sent > limit then return ping end
  return requests[(sent - 1) %% #requests + 1]
end

function response(status, headers, body)
  if mode ~= "ask" then return end
  if status == 200 and string.sub(body, 1, 9) == '{"type":5' then
    deferred = deferred + 1
  elseif status ~= 200 or string.sub(body, 1, 9) ~= '{"type":1' then
    other = other + 1
  end
  answered = answered + 1
  if deferred + other >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local d, o = 0, 0
  for _, t in ipairs(threads) do d = d + t:get("deferred"); o = o + t:get("other") end
  io.write(string.format(
    "RESULT %%d %%d %%d %%d %%d %%d %%d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), d, o,
    summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout))
end
"""


def _pin(cpu: int) -> Any:
    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def _raw_request(key: SigningKey, port: int, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    stamp = str(int(time.time())).encode()
    signature = key.sign(stamp + body).signature.hex().encode()
    head = (
        b"POST /interactions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Content-Type: application/json\r\nX-Signature-Ed25519: %s\r\n"
        b"X-Signature-Timestamp: %s\r\nContent-Length: %d\r\n\r\n"
    ) % (port, signature, stamp, len(body))
    return head + body


def _ask(index: int) -> dict[str, Any]:
    """An /ask interaction as Discord sends it, with its own id and user."""
    return {
        "app_permissions": "562949953421311",
        "application_id": "1000000000000000000",
        "authorizing_integration_owners": {"0": "3300000000000000001"},
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


def _write_requests(path: Path, requests: list[bytes]) -> None:
    with path.open("wb") as f:
        for raw in requests:
            f.write(b"%d\n" % len(raw))
            f.write(raw)


def _wrk(workdir: Path, url: str, requests: Path, mode: str, limit: int, seconds: int) -> list[int]:
    script = workdir / f"{mode}.lua"
    script.write_text(_LUA % {"path": requests, "mode": mode, "limit": limit})
    result = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        preexec_fn=_pin(LOADGEN_CPU),
        check=True,
    )
    match = re.search(r"^RESULT (.*)$", result.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk gave no result: {result.stdout}\n{result.stderr}")
    return [int(x) for x in match.group(1).split()]


def _queue(store: Any) -> list[tuple[bytes, float]]:
    return cast(list[tuple[bytes, float]], store.zrange("arq:queue", 0, -1, withscores=True))


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _wait_healthy(port: int, deadline: float) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError(f"the server on port {port} never became healthy")


def _start_server(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.frontdoor", "serve"],
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


def _cold_start(env: dict[str, str], log: Path) -> tuple[float, float]:
    """Median seconds from exec to the first 200 on /health, and the RSS (MB) then."""
    import psutil

    from app.redis_server import free_port

    times, rss = [], []
    for _ in range(COLD_START_RUNS):
        port = free_port()
        started = time.monotonic()
        process = _start_server({**env, "PORT": str(port)}, log)
        try:
            _wait_healthy(port, started + 20)
            times.append(time.monotonic() - started)
            rss.append(psutil.Process(process.pid).memory_info().rss / 2**20)
        finally:
            _stop(process)
    return statistics.median(times), statistics.median(rss)


def run() -> dict[str, float]:
    """Run every measurement and return the figures."""
    import redis

    from app.redis_server import RedisServer, free_port

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get update && apt-get install -y wrk (as root)")
    key = SigningKey.generate()
    with (
        tempfile.TemporaryDirectory(prefix="frontdoor-") as tmp,
        RedisServer(Path(tmp) / "redis", persist=True) as server,
    ):
        workdir = Path(tmp)
        log = workdir / "server.log"
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "DISCORD_PUBLIC_KEY": bytes(key.verify_key).hex(),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
        }
        cold_s, rss_mb = _cold_start(env, log)

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = _start_server({**env, "PORT": str(port)}, log)
        store = redis.Redis.from_url(server.url)
        try:
            _wait_healthy(port, time.monotonic() + 20)
            pings = workdir / "pings.req"
            _write_requests(
                pings,
                [_raw_request(key, port, {"type": 1, "id": str(i)}) for i in range(PING_VARIANTS)],
            )
            _wrk(workdir, url, pings, "ping", 0, WARMUP_S)
            cpu = _cpu_seconds(process.pid)
            ping = _wrk(workdir, url, pings, "ping", 0, DURATION_S)
            ping_cpu = _cpu_seconds(process.pid) - cpu

            warm = workdir / "warm.req"
            warm_count = 30_000
            _write_requests(warm, [_raw_request(key, port, _ask(i)) for i in range(warm_count)])
            estimate = _wrk(workdir, url, warm, "ping", 0, WARMUP_S)
            per_second = estimate[0] / (estimate[1] / 1e6)
            count = int(per_second * DURATION_S)
            asks = [_raw_request(key, port, _ask(warm_count + i)) for i in range(count)]
            asks.append(_raw_request(key, port, {"type": 1, "id": "0"}))
            ask_file = workdir / "asks.req"
            _write_requests(ask_file, asks)
            before = {m for m, _ in _queue(store)}
            cpu = _cpu_seconds(process.pid)
            ask = _wrk(workdir, url, ask_file, "ask", count, DURATION_S * 2)
            ask_cpu = _cpu_seconds(process.pid) - cpu
            # wrk waits out -d even after its thread stops, so the /ask stream is
            # timed by the enqueue times the server wrote into the job scores.
            scores = [score for member, score in _queue(store) if member not in before]
            queued = len(scores)
            ask_seconds = (max(scores) - min(scores)) / 1000
        finally:
            store.close()
            _stop(process)

    ping_rps = ping[0] / (ping[1] / 1e6)
    ask_rps = ask[4] / ask_seconds
    return {
        "ping_per_s": round(ping_rps),
        "ping_p50_ms": ping[2] / 1000,
        "ping_p99_ms": ping[3] / 1000,
        "ping_errors": ping[6],
        "ask_per_s": round(ask_rps),
        "ask_p50_ms": ask[2] / 1000,
        "ask_p99_ms": ask[3] / 1000,
        "ask_deferred": ask[4],
        "ask_not_deferred": ask[5],
        "ask_errors": ask[6],
        "ask_queued_jobs": queued,
        "ping_cpu_us": round(ping_cpu / ping[0] * 1e6, 1),
        "ask_cpu_us": round(ask_cpu / ask[4] * 1e6, 1),
        "cold_start_s": round(cold_s, 3),
        "rss_mb": round(rss_mb, 1),
    }


def table(figures: dict[str, float]) -> str:
    """The figures as a Markdown table beside their targets."""
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


def serve() -> None:
    """The server side: what `python -m app web` runs, on 127.0.0.1:$PORT."""
    import uvicorn

    from app.logs import configure_logging
    from app.settings import Settings
    from app.web import create_app

    settings = Settings.from_env(os.environ)
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=settings.port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


def main() -> dict[str, float]:
    """Print the Markdown table and return the figures."""
    if sys.argv[1:] == ["serve"]:
        serve()
        return {}
    figures = run()
    print(table(figures))
    if figures["ask_queued_jobs"] != figures["ask_deferred"]:
        print("MISMATCH: queued jobs differ from deferrals", file=sys.stderr)
    return figures


if __name__ == "__main__":
    main()
