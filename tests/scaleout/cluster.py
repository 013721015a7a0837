"""Several web and worker processes on one Redis, PostgreSQL and Chroma server, for tests.

Each process is a real `python -m app web` or `python -m app worker`, started with the
environment of the scale-out shape (`DATABASE_URL`, `CHROMA_URL`, `REDIS_URL`), its own
`DATA_DIR`, metrics port and log file.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis.asyncio as aioredis

from app.jobs import WORKER_HEARTBEAT_PREFIX
from tests.engines import free_port

ROOT = Path(__file__).resolve().parents[2]
_COMMANDS = re.compile(r'^commands_total\{command="(\w+)",outcome="(\w+)"\} ([0-9.e+]+)$', re.M)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int
    handle: IO[bytes] = field(repr=False)


class Cluster:
    """Starts, watches and stops the processes of one test."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.tmp = tmp
        self.processes: dict[str, Process] = {}

    def start(self, name: str, command: str, **env: str) -> Process:
        """Start `python -m app COMMAND` as `name`."""
        port = free_port()
        log = self.tmp / f"{name}.log"
        handle = log.open("wb")
        extra = {
            "DATA_DIR": str(self.tmp / name),
            "METRICS_PORT": str(port),
            "PORT": str(port),
            **env,
        }
        popen = subprocess.Popen(
            [sys.executable, "-m", "app", command],
            cwd=ROOT,
            env={**self.env, **extra},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        process = Process(name, popen, log, port, handle)
        self.processes[name] = process
        return process

    async def wait_for_workers(self, redis_url: str, names: list[str], within: float) -> None:
        """Until each named worker's heartbeat is in Redis."""
        redis = aioredis.Redis.from_url(redis_url)
        pids = {str(self.processes[n].popen.pid) for n in names}
        deadline = time.monotonic() + within
        try:
            while time.monotonic() < deadline:
                for name in names:
                    assert self.processes[name].popen.poll() is None, self.log_tail(name)
                keys = [k.decode() async for k in redis.scan_iter(WORKER_HEARTBEAT_PREFIX + "*")]
                beating = {k.split(":")[-2] for k in keys}
                if pids <= beating:
                    return
                await asyncio.sleep(0.2)
        finally:
            await redis.aclose()
        raise AssertionError("workers not ready: " + " | ".join(self.log_tail(n) for n in names))

    def wait_for_web(self, name: str, timeout: float = 60.0) -> str:
        """Until the web process answers; return its base URL."""
        url = f"http://127.0.0.1:{self.processes[name].port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.processes[name].popen.poll() is None, self.log_tail(name)
            try:
                with urllib.request.urlopen(url + "/health/live", timeout=1) as response:
                    if response.status == 200:
                        return url
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{name} did not answer: {self.log_tail(name)}")

    def answered(self, name: str) -> dict[str, float]:
        """The worker's `commands_total` by command (every outcome but errors)."""
        url = f"http://127.0.0.1:{self.processes[name].port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        counts: dict[str, float] = {}
        for command, outcome, value in _COMMANDS.findall(text):
            if outcome not in ("error", "failed"):
                counts[command] = counts.get(command, 0.0) + float(value)
        return counts

    def kill(self, name: str) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        process = self.processes[name]
        process.popen.send_signal(signal.SIGKILL)
        process.popen.wait()

    def log_tail(self, name: str, size: int = 3000) -> str:
        process = self.processes[name]
        process.handle.flush()
        return f"[{name}] " + process.log.read_bytes()[-size:].decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM every process still running, then SIGKILL what has not stopped in 30 s."""
        for process in self.processes.values():
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.popen.wait(30)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
            process.handle.close()
