"""`python -m app run`: the all-in-one starts without Discord credentials and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.cli.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_for_health(
    url: str, process: subprocess.Popen[bytes], timeout: float, status: str = "ok"
) -> httpx.Response:
    """Poll /health until it answers 200 with `status` (the worker reports a few seconds in)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "python -m app run exited early"
        try:
            response = httpx.get(url, timeout=1.0)
            if response.status_code == 200 and response.json()["status"] == status:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout}s")


@pytest.mark.slow
def test_run_starts_redis_web_and_worker_then_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "REDIS_", "SYNC_"))}
    env.update({"DATA_DIR": str(tmp_path / "data"), "PORT": str(port), "HOST": "127.0.0.1"})
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "run"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        # Web, Redis and the worker (its models loaded, its heartbeat fresh) are all up.
        health = wait_for_health(f"http://127.0.0.1:{port}/health", process, 120)
        assert health.json()["checks"]["worker"]["ok"] is True
        answer = httpx.post(f"http://127.0.0.1:{port}/interactions", content=b"{}")
        assert answer.status_code == 503
        assert "DISCORD_PUBLIC_KEY" in answer.json()["error"]
        socket_path = tmp_path / "data" / "redis" / "redis.sock"
        assert socket_path.exists()
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    log = output.decode()
    assert process.returncode == 0, log[-2000:]
    assert "DISCORD_PUBLIC_KEY" in log  # the hint naming the variables to set
    assert "Traceback" not in log
    # redis-server removes its socket when it shuts down.
    assert not socket_path.exists()
    # Persistence is on: the append-only file was written under DATA_DIR.
    assert list((tmp_path / "data" / "redis").glob("appendonly*"))
