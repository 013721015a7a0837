"""Discord's rate limits shared by every process that uses the bot token, through Redis.

Each process keeps its own exact limiter (`app.discord.ratelimit`); with several workers
that is not enough, since Discord counts the token's requests from all of them. So each
request also takes a ticket here, in one Lua script, against three shared facts:

* the global block (`ratelimit:global:blocked`): set for `retry_after` by a global 429
  seen by anyone; bot routes wait it out, interaction webhooks are not subject to it;
* the route's bucket (`ratelimit:bucket:KEY`): the remaining count and reset time the
  latest response reported, spent down by each ticket;
* the global cap (`ratelimit:global:window`): a sorted set of the last second's requests,
  at most `GLOBAL_LIMIT` of them. A request counts from its sending until a second after
  its answer (`release` moves it to its answer time), as the local sliding window does.

Times come from the Redis server's clock, so processes on machines whose clocks differ
still agree.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from app.discord.ratelimit import GLOBAL_LIMIT, GLOBAL_PERIOD, RateLimiter, parse_bucket_headers
from app.discord.routes import CompiledRoute
from app.jobs import RATE_LIMIT_KEY_PREFIX

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

WINDOW_KEY: Final = RATE_LIMIT_KEY_PREFIX + "global:window"
BLOCKED_KEY: Final = RATE_LIMIT_KEY_PREFIX + "global:blocked"
BUCKET_PREFIX: Final = RATE_LIMIT_KEY_PREFIX + "bucket:"

_NOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS: window, blocked, bucket. ARGV: limit, period ms, ticket, subject to the global block.
# Returns 0 (ticket taken) or the milliseconds to wait before asking again.
_ACQUIRE: Final = (
    _NOW
    + """
if ARGV[4] == '1' then
  local blocked = redis.call('PTTL', KEYS[2])
  if blocked > 0 then return blocked end
end
local remaining = tonumber(redis.call('HGET', KEYS[3], 'remaining') or '-1')
local reset_at = tonumber(redis.call('HGET', KEYS[3], 'reset_at') or '0')
if reset_at > now and remaining == 0 then return reset_at - now end
local period = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + period - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], 10 * period)
if reset_at > now and remaining > 0 then redis.call('HINCRBY', KEYS[3], 'remaining', -1) end
return 0
"""
)
# KEYS: window. ARGV: ticket. The request was answered now: it counts until a period later.
_RELEASE: Final = _NOW + "redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1]) return 0"
# KEYS: bucket. ARGV: remaining, reset after (ms), window id. A response's view of its bucket;
# within the window already known the count only goes down (tickets spent it up front).
_UPDATE: Final = (
    _NOW
    + """
local known = redis.call('HGET', KEYS[1], 'window')
local remaining = tonumber(ARGV[1])
if known == ARGV[3] then
  remaining = math.min(remaining, tonumber(redis.call('HGET', KEYS[1], 'remaining') or ARGV[1]))
elseif known and tonumber(known) and tonumber(ARGV[3]) and tonumber(ARGV[3]) < tonumber(known) then
  return 0
end
redis.call('HSET', KEYS[1], 'remaining', remaining, 'reset_at', now + tonumber(ARGV[2]),
  'window', ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 60000)
return 1
"""
)
# KEYS: bucket. ARGV: retry after (ms). A 429 for the bucket: nothing until it has passed.
_EXHAUST: Final = (
    _NOW
    + """
redis.call('HSET', KEYS[1], 'remaining', 0, 'reset_at', now + tonumber(ARGV[1]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) + 60000)
return 1
"""
)
# KEYS: blocked. ARGV: retry after (ms). Extends, never shortens, the global block.
_BLOCK: Final = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""


class SharedLimits:
    """The token's rate limits as every process sees them (see the module)."""

    def __init__(
        self,
        redis: Redis,
        *,
        global_limit: int = GLOBAL_LIMIT,
        global_period: float = GLOBAL_PERIOD,
    ) -> None:
        self._limit = global_limit
        self._period_ms = int(global_period * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._update = redis.register_script(_UPDATE)
        self._exhaust = redis.register_script(_EXHAUST)
        self._block = redis.register_script(_BLOCK)

    async def acquire(self, bucket: str, *, subject_to_global: bool) -> tuple[str, float]:
        """Wait for a ticket for one request on `bucket`; return it and the seconds waited."""
        ticket = uuid.uuid4().hex
        keys = [WINDOW_KEY, BLOCKED_KEY, BUCKET_PREFIX + bucket]
        args: list[str | int] = [
            self._limit,
            self._period_ms,
            ticket,
            "1" if subject_to_global else "0",
        ]
        waited = 0.0
        while wait_ms := int(await self._acquire(keys=keys, args=args)):
            await asyncio.sleep(wait_ms / 1000)
            waited += wait_ms / 1000
        return ticket, waited

    async def release(self, ticket: str) -> None:
        """The ticket's request was answered (or failed) now."""
        await self._release(keys=[WINDOW_KEY], args=[ticket])

    async def update(self, bucket: str, headers: Mapping[str, str]) -> None:
        """Tell every process what a response said of its bucket."""
        parsed = parse_bucket_headers(headers)
        if parsed is None:
            return
        await self._update(
            keys=[BUCKET_PREFIX + bucket],
            args=[parsed.remaining, int(parsed.reset_after * 1000), parsed.reset],
        )

    async def rate_limited(self, bucket: str, retry_after: float, *, is_global: bool) -> None:
        """Tell every process of a 429: the whole token blocked, or the one bucket."""
        wait_ms = max(1, int(retry_after * 1000))
        if is_global:
            await self._block(keys=[BLOCKED_KEY], args=[wait_ms])
        else:
            await self._exhaust(keys=[BUCKET_PREFIX + bucket], args=[wait_ms])


class Limits:
    """This process's limiter and, when processes share the token, the shared one: a
    request waits for both, and what a response says reaches both."""

    def __init__(self, local: RateLimiter, shared: SharedLimits | None = None) -> None:
        self.local = local
        self.shared = shared

    async def acquire(self, route: CompiledRoute) -> tuple[float, str | None]:
        """Wait until the request may be sent; return the seconds waited and its ticket."""
        waited = await self.local.acquire(route)
        if self.shared is None:
            return waited, None
        try:
            ticket, shared_wait = await self.shared.acquire(
                self.local.bucket_key(route),
                subject_to_global=not route.route.is_interaction_webhook,
            )
        except BaseException:
            self.local.release()
            raise
        return waited + shared_wait, ticket

    async def release(self, ticket: str | None) -> None:
        """The request is over, answered or not: call exactly once per `acquire`."""
        self.local.release()
        if ticket is not None and self.shared is not None:
            await self.shared.release(ticket)

    async def update(self, route: CompiledRoute, headers: Mapping[str, str]) -> None:
        """Learn the route's bucket from a response's headers."""
        self.local.update(route, headers)
        if self.shared is not None:
            await self.shared.update(self.local.bucket_key(route), headers)

    async def rate_limited(
        self, route: CompiledRoute, retry_after: float, *, is_global: bool
    ) -> None:
        """Record a 429, here and for every process."""
        self.local.rate_limited(route, retry_after, is_global=is_global)
        if self.shared is not None:
            await self.shared.rate_limited(
                self.local.bucket_key(route), retry_after, is_global=is_global
            )
