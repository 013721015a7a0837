"""Locks that every worker and command line share through Redis: leases that expire.

A lease is a Redis key set only if absent (`SET NX PX`) whose value is a token only its
holder knows. The holder renews it while it works and deletes it when done, both by a
script that first checks the token, so nobody ever renews or frees another's lease. A
holder that dies stops renewing and its lease expires within `ttl` seconds: a crashed
worker never blocks the others for long.

Two kinds of work use them:

* a channel's sync (`sync:channel:ID`): one sync of a channel at a time, on any worker;
* maintenance (`maintenance`): reindex, backup and upkeep, one at a time, and never while
  a channel syncs. A sync takes its channel's lease and then looks for maintenance; a
  maintenance job takes its lease and then waits for the channel leases to go. Each looks
  only after taking its own, so the two can never both proceed.

Without Redis (a single process on one machine) `LocalLeases` keeps the same rules within
the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Final, Protocol

from app.errors import CommandError
from app.jobs import LEASE_KEY_PREFIX, lease_key

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

MAINTENANCE: Final = "maintenance"
CHANNEL_SYNC_PREFIX: Final = "sync:channel:"
# A holder renews its lease every third of this; a dead holder's lease lasts this long.
DEFAULT_TTL: Final = 10.0
# How long a sync waits for a channel another holds: long enough for a dead holder's lease
# to lapse, so a sync after a crash never skips the channel the crash left locked.
CHANNEL_WAIT: Final = DEFAULT_TTL + 2.0
_POLL: Final = 0.2

_RELEASE: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


class LeaseBusy(CommandError):
    """Someone else holds the lease and it was not freed in time."""


def holder_name(role: str) -> str:
    """Who takes a lease, as others see it: role, host and process."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


def channel_lease(channel_id: str) -> str:
    """The lease of one channel's sync."""
    return CHANNEL_SYNC_PREFIX + channel_id


class Leases(Protocol):
    """Named, exclusive leases (Redis across machines, or one process's own)."""

    def hold(self, name: str, *, wait: float = 0.0) -> contextlib.AbstractAsyncContextManager[bool]:
        """Hold `name` for the block, waiting up to `wait` s; yields whether it is held."""
        ...

    async def holder(self, name: str) -> str | None:
        """Who holds `name` now, or None."""
        ...

    async def held(self, prefix: str) -> list[str]:
        """The names held now that start with `prefix`."""
        ...


class RedisLeases:
    """Leases in Redis, shared by every process that reaches it."""

    def __init__(self, redis: Redis, owner: str, *, ttl: float = DEFAULT_TTL) -> None:
        self._redis = redis
        self._owner = owner
        self._ttl_ms = int(ttl * 1000)
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)

    @contextlib.asynccontextmanager
    async def hold(self, name: str, *, wait: float = 0.0) -> AsyncIterator[bool]:
        key = lease_key(name)
        token = f"{self._owner}#{uuid.uuid4().hex[:12]}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not await self._redis.set(key, token, nx=True, px=self._ttl_ms):
            if loop.time() >= deadline:
                yield False
                return
            await asyncio.sleep(_POLL)
        renewing = asyncio.create_task(self._keep(key, token))
        try:
            yield True
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            try:
                await self._release(keys=[key], args=[token])
            except Exception as exc:  # the lease expires by itself within its ttl
                logger.warning("could not free the lease %s: %s", name, exc)

    async def _keep(self, key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            try:
                if not await self._renew(keys=[key], args=[token, self._ttl_ms]):
                    logger.error("lost the lease %s: it expired before it was renewed", key)
                    return
            except Exception as exc:
                logger.warning("could not renew the lease %s: %s", key, exc)

    async def holder(self, name: str) -> str | None:
        value = await self._redis.get(lease_key(name))
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else str(value)
        return text.split("#", 1)[0]

    async def held(self, prefix: str) -> list[str]:
        pattern = LEASE_KEY_PREFIX + prefix + "*"
        names = []
        async for key in self._redis.scan_iter(match=pattern, count=500):
            text = key.decode() if isinstance(key, bytes) else str(key)
            names.append(text.removeprefix(LEASE_KEY_PREFIX))
        return names


class LocalLeases:
    """The same leases within one process, for a state no other process shares."""

    def __init__(self, owner: str = "this process") -> None:
        self._owner = owner
        self._names: set[str] = set()
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, name: str, *, wait: float = 0.0) -> AsyncIterator[bool]:
        async with self._changed:
            if name in self._names:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: name not in self._names), wait
                    )
            if name in self._names:
                got = False
            else:
                self._names.add(name)
                got = True
        if not got:
            yield False
            return
        try:
            yield True
        finally:
            async with self._changed:
                self._names.discard(name)
                self._changed.notify_all()

    async def holder(self, name: str) -> str | None:
        return self._owner if name in self._names else None

    async def held(self, prefix: str) -> list[str]:
        return [n for n in self._names if n.startswith(prefix)]


@contextlib.asynccontextmanager
async def maintenance(
    leases: Leases, what: str, *, wait: float, clock: Callable[[], float] | None = None
) -> AsyncIterator[None]:
    """Hold the maintenance lease for `what`, once no channel is syncing anywhere.

    Waits up to `wait` s for another maintenance job and then for running syncs; raises
    LeaseBusy naming who is in the way when they do not finish in time.
    """
    loop = asyncio.get_running_loop()
    now = clock or loop.time
    deadline = now() + wait
    async with leases.hold(MAINTENANCE, wait=wait) as held:
        if not held:
            who = await leases.holder(MAINTENANCE) or "another job"
            raise LeaseBusy(f"cannot {what}: {who} is running maintenance; try again later")
        while syncing := await leases.held(CHANNEL_SYNC_PREFIX):
            if now() >= deadline:
                raise LeaseBusy(
                    f"cannot {what}: {len(syncing)} channels are still syncing; try again later"
                )
            await asyncio.sleep(_POLL)
        yield


@contextlib.asynccontextmanager
async def channel_sync(leases: Leases, channel_id: str, *, wait: float) -> AsyncIterator[bool]:
    """Hold a channel's sync lease while no maintenance runs; yields False when it cannot.

    Gives up (False) when another sync of the channel holds it past `wait`, or when a
    maintenance job still runs after `wait`.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        async with leases.hold(channel_lease(channel_id), wait=wait) as held:
            if not held:
                yield False
                return
            if await leases.holder(MAINTENANCE) is None:
                yield True
                return
        # Maintenance goes first: step aside (freeing the channel) until it is done.
        if loop.time() >= deadline:
            yield False
            return
        await asyncio.sleep(_POLL)
