"""The scale-out engines for the test suite: a throw-away PostgreSQL server and `chroma run`.

The store, sync, answer and fault tests run twice, through the `engine` fixture: on SQLite
with an embedded Chroma directory (one machine, the default) and on PostgreSQL with a Chroma
server (`DATABASE_URL` and `CHROMA_URL`, the scale-out set-up). Each server is started once
per session, on loopback in a temporary directory, and only when a test asks for it; each
test gets a database of its own and an empty Chroma server.

PostgreSQL is Debian's server (`pg_config --bindir`, else `/usr/lib/postgresql/*/bin`).
`initdb` refuses to run as root, so as root the cluster belongs to the `postgres` user (or
`nobody`), in a directory of its own under the system's temporary directory. Where no server
is installed the Postgres variants are skipped, and the run ends with a line saying why
(`make test` installs Debian's `postgresql` package first where it may).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import httpx
import pytest

# Re-exported: the scale-out tests take their ports from here too.
from app.cli.redis_server import free_port as free_port

SQLITE = "sqlite"
POSTGRES = "postgres"
# The variants of `engine`: the second carries the `servers` marker.
ENGINES = [pytest.param(SQLITE), pytest.param(POSTGRES, marks=pytest.mark.servers)]
ADMIN_USER = "postgres"
_CONNECTIONS = "-c max_connections=200"
# Nothing here needs to survive a crash: durability off, for speed.
_NOT_DURABLE = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"

_unavailable: dict[str, str] = {}


class ServerUnavailable(Exception):
    """A server cannot run on this machine; the text says why."""


def postgres_bindir() -> Path | None:
    """The directory of PostgreSQL's server binaries (initdb, postgres), if one is installed."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if found:
            candidates.append(Path(found))
    # Debian keeps each major version apart; the newest first.
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versions, key=_major, reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    return None


def _major(bindir: str) -> int:
    version = Path(bindir).parent.name
    return int(version) if version.isdigit() else 0


class PostgresServer:
    """A PostgreSQL cluster of its own, on 127.0.0.1, for one test session.

    Durability is off (fsync, synchronous commit) unless `durable`: the cluster is thrown away
    at the end, and only a benchmark needs the cost of a real commit.
    """

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pytest-postgres-"))
        self._user: dict[str, Any] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)

    def start(self, timeout: float = 60.0) -> None:
        """Create the cluster and start the server; wait until it accepts connections."""
        if os.geteuid() == 0:
            # initdb refuses root: the cluster belongs to an unprivileged user.
            owner = _unprivileged_user()
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        data = self.root / "data"
        initdb = self._run(
            "initdb",
            "-D",
            str(data),
            *f"-U {ADMIN_USER} -A trust -E UTF8 --locale=C --no-sync".split(),
        )
        if initdb.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {_tail(initdb.stdout)}")
        with (self.root / "postgres.log").open("wb") as log:
            args = [str(self.bindir / "postgres"), "-D", str(data), "-k", str(self.root)]
            args += f"-p {self.port} -h 127.0.0.1 {_CONNECTIONS}".split()
            if not self.durable:
                args += _NOT_DURABLE.split()
            self._process = self._popen(args, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerUnavailable(f"postgres exited at start: {self.log_tail()}")
            ready = self._run("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port))
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise ServerUnavailable(f"postgres did not accept connections within {timeout:.0f}s")

    def url(self, database: str) -> str:
        """The DATABASE_URL of one database of this server."""
        return f"postgresql://{ADMIN_USER}@127.0.0.1:{self.port}/{database}"

    async def create_database(self) -> str:
        """A new, empty database; returns its name."""
        name = f"test_{next(self._names)}"
        await self._admin(f'CREATE DATABASE "{name}"')
        return name

    async def drop_database(self, name: str) -> None:
        """Drop a database, closing whatever connections a test left open to it."""
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self) -> str:
        """The end of the server's log, for an error message."""
        log = self.root / "postgres.log"
        return _tail(log.read_text(errors="replace")) if log.exists() else ""

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete the cluster."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    async def _admin(self, statement: str) -> None:
        import asyncpg

        connection = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user=ADMIN_USER, database="postgres"
        )
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    def _run(self, binary: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / binary), *args],
            cwd=self.root,
            env=_child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            **self._user,
        )

    def _popen(self, args: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            args,
            cwd=self.root,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            **self._user,
        )


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerUnavailable("running as root and there is no postgres or nobody user")


def _child_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}


def _tail(text: str) -> str:
    return " | ".join(text.strip().splitlines()[-5:])


class ChromaServer:
    """`chroma run` (the chromadb package's own server) on 127.0.0.1, for one test session."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pytest-chroma-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    @property
    def url(self) -> str:
        """The CHROMA_URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until its heartbeat answers."""
        args = [self.binary, "run", "--path", str(self.root / "data"), "--host", "127.0.0.1"]
        with (self.root / "chroma.log").open("wb") as log:
            self._process = subprocess.Popen(
                [*args, "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log_text = (self.root / "chroma.log").read_text(errors="replace")
                raise ServerUnavailable(f"chroma run exited at start: {_tail(log_text)}")
            try:
                if httpx.get(f"{self.url}/api/v2/heartbeat", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ServerUnavailable(f"chroma run did not answer within {timeout:.0f}s")

    def clear(self) -> None:
        """Delete every collection, so that a test starts from an empty server."""
        if self._client is None:
            import chromadb
            from chromadb.config import Settings

            self._client = chromadb.HttpClient(
                host="127.0.0.1",
                port=self.port,
                settings=Settings(anonymized_telemetry=False),
            )
        for collection in self._client.list_collections():
            self._client.delete_collection(collection.name)

    def stop(self) -> None:
        """Stop the server and delete its data."""
        if self._client is not None:
            from app.retrieval.index import close_chroma

            close_chroma(self._client)
            self._client = None
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def chroma_binary() -> str | None:
    """The `chroma` command of this environment's chromadb package."""
    return shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")


_Server = TypeVar("_Server", PostgresServer, ChromaServer)


def _skip(kind: str, reason: str) -> NoReturn:
    _unavailable[kind] = reason
    pytest.skip(f"{kind}: {reason}")


def _served(kind: str, server: _Server) -> Iterator[_Server]:
    """Start the server for the session's tests and stop it after; skip them if it fails."""
    try:
        server.start()
    except ServerUnavailable as exc:
        server.stop()
        _skip(kind, str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throw-away PostgreSQL server for the session, started when first asked for."""
    bindir = postgres_bindir()
    if bindir is None:
        _skip("PostgreSQL", "no server installed (Debian: apt-get install postgresql)")
    yield from _served("PostgreSQL", PostgresServer(bindir))


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[ChromaServer]:
    """One `chroma run` server for the session, started when first asked for."""
    binary = chroma_binary()
    if binary is None:
        _skip("Chroma server", "the chroma command is not installed")
    yield from _served("Chroma server", ChromaServer(binary))


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Which engines hold the test's state: "sqlite" (and embedded Chroma) or "postgres"
    (and a Chroma server)."""
    name: str = request.param
    return name


@pytest.fixture
async def database_url(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A DATABASE_URL of the test's own: a SQLite file, or a new database on the server."""
    if engine == SQLITE:
        yield f"sqlite:///{tmp_path / 'bot.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = await server.create_database()
    yield server.url(name)
    await server.drop_database(name)


@pytest.fixture
def chroma_url(engine: str, request: pytest.FixtureRequest) -> str | None:
    """A CHROMA_URL with no collections in it, or None: an embedded directory."""
    if engine == SQLITE:
        return None
    server: ChromaServer = request.getfixturevalue("chroma_server")
    server.clear()
    return server.url


@pytest.fixture
def engine_env(engine: str, database_url: str, chroma_url: str | None) -> dict[str, str]:
    """The variables that point a process at the engines; none for SQLite and an embedded
    index, which live under DATA_DIR."""
    if engine == SQLITE:
        return {}
    assert chroma_url is not None
    return {"DATABASE_URL": database_url, "CHROMA_URL": chroma_url}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which engines could not run, so that skipped variants are never a surprise."""
    for kind, reason in _unavailable.items():
        terminalreporter.write_line(f"{kind} tests skipped: {reason}", yellow=True)
