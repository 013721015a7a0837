"""The load generator every server in bench.frontdoor gets: wrk with one Lua script.

A request file holds raw HTTP requests, each after a line with its length. In
"ping" mode wrk cycles through them for the whole run. In "ask" mode the last
request is a PING and the others are sent once each, in order, then only the
PING: the run counts the deferred answers ({"type":5...}) and any other
answers to the /ask requests, times the stream from the first one sent to the
last one answered (LuaJIT's ffi reads CLOCK_MONOTONIC), and ends wrk as soon as
every /ask has been answered, rather than sleeping out its -d.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

_LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *now);
int getpid(void);
int tgkill(int tgid, int tid, int sig);
]]
local clock = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000000 + math.floor(tonumber(clock.tv_nsec) / 1000)
end

local path, mode, limit = "%(path)s", "%(mode)s", %(limit)d
local requests, ping = {}, nil
sent, deferred, other, first_us, last_us = 0, 0, 0, 0, 0
local threads = {}
local finished = false

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
  if sent == 1 then first_us = now_us() end
  if mode == "ask" and sent > limit then return ping end
  return requests[(sent - 1) %% #requests + 1]
end

function response(status, headers, body)
  if mode ~= "ask" then return end
  if status == 200 and string.sub(body, 1, 9) == '{"type":5' then
    deferred = deferred + 1
    last_us = now_us()
  elseif status ~= 200 or string.sub(body, 1, 9) ~= '{"type":1' then
    other = other + 1
    last_us = now_us()
  end
  if deferred + other >= limit and not finished then
    finished = true
    wrk.thread:stop()
    -- SIGINT to wrk's main thread (its tid is the pid) ends its sleep through -d.
    local pid = ffi.C.getpid()
    ffi.C.tgkill(pid, pid, 2)
  end
end

function done(summary, latency, requests)
  local d, o, first, last = 0, 0, nil, 0
  for _, t in ipairs(threads) do
    d = d + t:get("deferred")
    o = o + t:get("other")
    local f = t:get("first_us")
    if f > 0 and (first == nil or f < first) then first = f end
    last = math.max(last, t:get("last_us"))
  end
  local span = 0
  if first ~= nil and last > first then span = last - first end
  io.write(string.format(
    "RESULT %%d %%d %%d %%d %%d %%d %%d %%d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), d, o,
    summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout, span))
end
"""


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reports; times in microseconds."""

    requests: int
    duration_us: int
    p50_us: int
    p99_us: int
    deferred: int
    other: int
    errors: int
    stream_us: int


def write_requests(path: Path, requests: list[bytes]) -> Path:
    """Write raw requests in the format the Lua script reads."""
    with path.open("wb") as f:
        for raw in requests:
            f.write(b"%d\n" % len(raw))
            f.write(raw)
    return path


def run_wrk(
    workdir: Path,
    port: int,
    requests: Path,
    *,
    mode: str,
    limit: int,
    seconds: int,
    connections: int,
    cpu: int,
) -> WrkResult:
    """Run wrk pinned to `cpu` with one thread against 127.0.0.1:port and parse its result."""
    script = workdir / f"{mode}.lua"
    script.write_text(_LUA % {"path": requests, "mode": mode, "limit": limit})
    url = f"http://127.0.0.1:{port}"
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
        check=True,
    )
    match = re.search(r"^RESULT (.*)$", result.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk gave no result: {result.stdout}\n{result.stderr}")
    return WrkResult(*(int(x) for x in match.group(1).split()))
