"""`python -m app run`: Redis (when none is configured), web and worker on one machine.

Web and worker run as separate child processes, as they do in production, so
the web process stays light and a busy model never delays a deferral.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from app.cli.redis_server import RedisServer
from app.settings import Settings

logger = logging.getLogger(__name__)

_STOP_TIMEOUT = 15.0


def embedded_redis_socket(settings: Settings) -> Path:
    """Where the all-in-one mode's private Redis listens (a unix socket, no TCP port)."""
    return settings.data_dir / "redis" / "redis.sock"


def run_all_in_one(settings: Settings, python: str = sys.executable) -> int:
    """Start everything, wait for Ctrl-C or a child's death, then stop everything."""
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    env = dict(os.environ)
    redis: RedisServer | None = None
    children: dict[str, subprocess.Popen[bytes]] = {}
    status = 0
    try:
        if settings.redis_url is None:
            redis = RedisServer(
                settings.data_dir / "redis", unix_socket=embedded_redis_socket(settings)
            )
            redis.start()
            env["REDIS_URL"] = redis.url
        for role in ("web", "worker"):
            # The children share our process group, so a terminal's Ctrl-C reaches them too.
            children[role] = subprocess.Popen([python, "-m", "app", role], env=env)
        logger.info(
            "running: web on %s:%d, worker, redis %s",
            settings.host,
            settings.port,
            "embedded" if redis else "external",
        )
        while not stopping:
            for role, child in children.items():
                code = child.poll()
                if code is not None:
                    logger.error("the %s process exited with status %d; stopping", role, code)
                    status = 1
                    stopping = True
            time.sleep(0.2)
    finally:
        _stop_children(children)
        if redis is not None:
            redis.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logger.info("stopped")
    return status


def _stop_children(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT
    for role, child in children.items():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("the %s process did not stop in time; killing it", role)
            child.kill()
            child.wait()
