"""Admission of a command in one Redis round trip: dedupe, rate limit and arq enqueue.

Every deferred command costs Redis work on the hot path, and round trips are
what bound the front door's throughput. One Lua script does, atomically:

1. skip when `arq:job:<id>` or `arq:result:<id>` exists: Discord may deliver an
   interaction twice, and arq's own `enqueue_job(_job_id=...)` refuses the
   same way, so the repeat is acknowledged but never queued twice;
2. refuse when the queue already holds `queue_limit` jobs or more (ZCARD,
   which counts waiting and running jobs alike): under a flood a clear "busy"
   beats a "thinking..." that outlives the interaction token. A busy answer
   does not use up the user's allowance, so the retry it asks for is admitted;
3. count the user's commands in a fixed one-minute window (INCR, with the
   expiry set by the first command of the window) and refuse above the limit,
   answering how long until the window ends;
4. write the job exactly as `ArqRedis.enqueue_job` does: PSETEX of the
   pickled job with arq's default expiry, ZADD to the queue with the enqueue
   time as score.

The script is run by EVALSHA; its SHA-1 is computed here, and the script is
loaded on each new connection and again whenever Redis answers NOSCRIPT
(after a restart or SCRIPT FLUSH).
Keys and script follow arq's names (app.jobs), so a stock arq worker runs the
jobs; rate-limit counters live under their own prefix.

The calls go over one pipelined connection (`_Link`): each request writes its
EVALSHA at once and waits for its own reply, replies coming back in the order
the commands were written. A pooled client would take a connection, check it
for stray data, send, wait and give it back on every call, which costs more
CPU than the rest of the request. A call that overruns the timeout drops the
connection (failing the calls still waiting on it), as the pooled client
does, and the next call opens a fresh one.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from arq.constants import expires_extra_ms
from arq.jobs import serialize_job
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from app.errors import BotError
from app.jobs import (
    ANSWER_QUEUE_NAME,
    HANDLE_INTERACTION,
    JOB_KEY_PREFIX,
    QUEUE_NAME,
    RATE_KEY_PREFIX,
    RESULT_KEY_PREFIX,
)
from app.settings import DEFAULT_QUEUE_LIMIT

logger = logging.getLogger(__name__)

RATE_WINDOW_MS: Final = 60_000
# What ArqRedis.enqueue_job writes as the job's try number when given one.
JOB_TRY: Final = 1

# KEYS: job, result, queue, rate counter, the other queue; ARGV: pickled job, score, job id.
# The queue limit counts the jobs waiting in both queues (general and answers).
# The expiry, window and limits are written into the text: fewer arguments to
# encode per call, and a Redis shared by differently configured instances
# still runs each one's own script, since the SHA-1 differs.
_SCRIPT_TEMPLATE: Final = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  return {0, 0}
end
if %(queue_limit)d > 0
    and redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[5]) >= %(queue_limit)d then
  return {3, 0}
end
local count = redis.call('INCR', KEYS[4])
if count == 1 then
  redis.call('PEXPIRE', KEYS[4], %(window_ms)d)
end
if count > %(limit)d then
  local ttl = redis.call('PTTL', KEYS[4])
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[4], %(window_ms)d)
    ttl = %(window_ms)d
  end
  return {2, ttl}
end
redis.call('PSETEX', KEYS[1], %(expires_ms)d, ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
return {1, 0}
"""


class AdmissionUnavailable(BotError):
    """Redis did not answer in time, so the command can be neither counted nor queued."""


class Outcome(enum.Enum):
    """What became of a command at the front door."""

    QUEUED = "queued"
    DUPLICATE = "duplicate"
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome, and for a refused command the seconds until the user may retry."""

    outcome: Outcome
    retry_after: float = 0.0


_QUEUED: Final = Verdict(Outcome.QUEUED)
_DUPLICATE: Final = Verdict(Outcome.DUPLICATE)
_BUSY: Final = Verdict(Outcome.BUSY)


def _pack(args: tuple[bytes | str | int, ...]) -> bytes:
    """One command in Redis's wire format (RESP)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class _Link:
    """One Redis connection carrying many commands in flight, answered in order.

    Commands issued in the same event-loop turn leave in one write, and their
    replies usually arrive in one read.
    """

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.pending: list[bytes] = []
        self.flusher: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[None] | None = None
        self.broken = False

    async def execute(self, *args: bytes | str | int) -> Any:
        """Send one command with the next write and wait for its reply."""
        if self.broken:
            raise RedisConnectionError("connection closed")
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # Waiter and command are queued together: replies are matched by order.
        self.waiters.append(waiter)
        self.pending.append(_pack(args))
        if self.flusher is None:
            self.flusher = asyncio.create_task(self._flush())
        return await waiter

    async def _flush(self) -> None:
        batch, self.pending, self.flusher = self.pending, [], None
        if self.broken or not batch:
            return
        try:
            await self.connection.send_packed_command(batch, check_health=False)
        except BaseException as exc:
            await self.close(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if self.reader is None or self.reader.done():
            self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while self.waiters:
            try:
                reply = await self.connection.read_response()
            except ResponseError as exc:
                reply = exc
            except BaseException as exc:
                await self.close(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            waiter = self.waiters.popleft()
            if waiter.done():
                continue
            if isinstance(reply, ResponseError):
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    async def close(self, exc: BaseException | None = None) -> None:
        """Drop the connection, failing every call still waiting on it."""
        self.broken = True
        self.pending = []
        error = RedisConnectionError(f"connection dropped: {exc!r}") if exc else None
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error or RedisConnectionError("connection closed"))
        await self.connection.disconnect(nowait=True)


class Admission:
    """Admits commands into the arq queue for the worker, within a time bound."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        rate_limit_per_minute: int,
        timeout: float,
        clock: Callable[[], float],
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
    ) -> None:
        self.redis = redis
        self.rate_limit_per_minute = rate_limit_per_minute
        self.queue_limit = queue_limit
        self.timeout = timeout
        self.clock = clock
        self.script = _SCRIPT_TEMPLATE % {
            "window_ms": RATE_WINDOW_MS,
            "limit": rate_limit_per_minute,
            "queue_limit": queue_limit,
            "expires_ms": expires_extra_ms,
        }
        # Redis names scripts by SHA-1; it is an identifier here, not a safeguard.
        self.script_sha = hashlib.sha1(self.script.encode()).hexdigest()  # noqa: S324
        self._link: _Link | None = None
        self._connecting = asyncio.Lock()

    async def admit(
        self,
        interaction: dict[str, Any],
        interaction_id: str,
        user_id: str,
        *,
        queue: str = QUEUE_NAME,
    ) -> Verdict:
        """Queue the interaction as a `handle_interaction` job on `queue` unless refused
        (see the module)."""
        enqueue_time_ms = int(self.clock() * 1000)
        job = serialize_job(HANDLE_INTERACTION, (interaction,), {}, JOB_TRY, enqueue_time_ms)
        keys_and_args = (
            JOB_KEY_PREFIX + interaction_id,
            RESULT_KEY_PREFIX + interaction_id,
            queue,
            RATE_KEY_PREFIX + user_id,
            ANSWER_QUEUE_NAME if queue == QUEUE_NAME else QUEUE_NAME,
            job,
            enqueue_time_ms,
            interaction_id,
        )
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._run(keys_and_args)
        except TimeoutError as exc:
            # A late reply would answer the wrong call; start over on a new connection.
            await self._drop(exc)
            raise AdmissionUnavailable(f"redis did not answer within {self.timeout}s") from exc
        except (RedisError, OSError) as exc:
            await self._drop(exc)
            raise AdmissionUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        code = int(reply[0])
        if code == 1:
            return _QUEUED
        if code == 0:
            return _DUPLICATE
        if code == 3:
            return _BUSY
        return Verdict(Outcome.RATE_LIMITED, retry_after=int(reply[1]) / 1000.0)

    async def aclose(self) -> None:
        """Close the connection this admission opened."""
        await self._drop(None)

    async def _run(self, keys_and_args: tuple[Any, ...]) -> list[Any]:
        link = self._link
        if link is None or link.broken:
            link = await self._connect()
        try:
            reply = await link.execute("EVALSHA", self.script_sha, 5, *keys_and_args)
        except NoScriptError:
            logger.info("loading the admission script into redis")
            await link.execute("SCRIPT", "LOAD", self.script)
            reply = await link.execute("EVALSHA", self.script_sha, 5, *keys_and_args)
        result: list[Any] = reply
        return result

    async def _connect(self) -> _Link:
        async with self._connecting:
            if self._link is None or self._link.broken:
                pool = self.redis.connection_pool
                # Same address, credentials and database as the client; the
                # timeout is this class's own, per call.
                kwargs = {**pool.connection_kwargs, "socket_timeout": None}
                connection = pool.connection_class(**kwargs)
                await connection.connect()  # type: ignore[no-untyped-call]
                link = _Link(connection)
                # Loaded up front, so the first burst of calls needs no retry.
                await link.execute("SCRIPT", "LOAD", self.script)
                self._link = link
            return self._link

    async def _drop(self, exc: BaseException | None) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close(exc)
