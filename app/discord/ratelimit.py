"""Client-side rate limiting for Discord's REST API.

Discord limits requests in three ways, and the client tracks each one so
that it waits instead of being refused:

* Per-route buckets. Every response names its bucket (`X-RateLimit-Bucket`,
  an opaque hash shared by routes that share a limit) and reports `Limit`,
  `Remaining` and `Reset-After`. A bucket is further split by the route's
  major parameters (channel, guild, webhook), so the key of a bucket is
  `hash:major`. Until the first response of a route names its hash, the route
  gets a provisional bucket of its own that waits only after a 429. Each
  request takes a slot before it is sent, so concurrent requests cannot all
  pass on the same last slot; when the window's reset time passes, the client
  refills the bucket itself. Responses then correct the count, keyed by the
  window they belong to (`X-RateLimit-Reset`): see `Bucket.update`.
* The global limit. A 429 with `global: true` (or a global scope header)
  blocks every bot route until `retry_after` has passed. Interaction webhook
  routes are not subject to it.
* A global cap of 50 requests per second across the whole client, kept as a
  sliding window so that no one-second window anywhere holds more than the
  cap, whatever the server's clock alignment and however the network delays
  each request (see `SlidingWindow`). Webhook routes stay under it too; it
  is simpler and costs nothing.

Separately, Cloudflare bans an IP after 10,000 invalid responses (401, 403
and 429 other than `shared` scope) in 10 minutes; `InvalidRequestCounter`
keeps the count so the client can refuse before that happens.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from app.discord.routes import CompiledRoute

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

GLOBAL_LIMIT: Final = 50
GLOBAL_PERIOD: Final = 1.0
INVALID_PERIOD: Final = 600.0
# Discord's ban threshold is 10,000; stop short of it, other processes may share the IP.
INVALID_LIMIT: Final = 9_500
# Reset epochs closer than this name the same window.
_SAME_WINDOW: Final = 0.001
# Above this many tracked buckets, expired ones are dropped.
_PRUNE_ABOVE: Final = 2048


@dataclass(frozen=True, slots=True)
class BucketHeaders:
    """The rate-limit headers of one response."""

    bucket: str
    limit: int
    remaining: int
    reset_after: float
    reset: str


def parse_bucket_headers(headers: Mapping[str, str]) -> BucketHeaders | None:
    """The bucket information of a response, or None when it carries none."""
    bucket = headers.get("x-ratelimit-bucket")
    if bucket is None:
        return None
    try:
        return BucketHeaders(
            bucket=bucket,
            limit=int(headers["x-ratelimit-limit"]),
            remaining=int(headers["x-ratelimit-remaining"]),
            reset_after=float(headers["x-ratelimit-reset-after"]),
            reset=headers.get("x-ratelimit-reset", ""),
        )
    except (KeyError, ValueError):
        return None


@dataclass
class Bucket:
    """One bucket's window: how many requests are left and when it refills."""

    limit: int | None = None
    remaining: int = 0
    reset_at: float = 0.0
    # The server's id of the window last heard of (its X-RateLimit-Reset epoch).
    window: float | None = None
    # True after the client refilled on its own, until the new window answers.
    refilled: bool = False
    # The window's length, as the longest Reset-After seen (a fresh window reports all of it).
    period: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)

    def delay(self, now: float) -> float:
        """Seconds to wait before the next request may be sent."""
        if self.remaining > 0 or now >= self.reset_at:
            return 0.0
        return self.reset_at - now

    def take(self, now: float) -> None:
        """Spend one slot for a request about to be sent."""
        if now >= self.reset_at and self.limit is not None:
            self.remaining = self.limit
            self.reset_at = now + self.period
            self.refilled = True
        if self.remaining > 0:
            self.remaining -= 1

    def update(self, headers: BucketHeaders, now: float) -> None:
        """Learn the window from a response.

        Responses to concurrent requests come back in any order: an answer from
        an older window than the one known is ignored, and so is a late answer
        from the window the client has already refilled past; within a window
        the count only goes down, since the client spent its slots up front.
        """
        window = _float_or_none(headers.reset)
        same_window = False
        if window is not None and self.window is not None:
            if window < self.window - _SAME_WINDOW:
                return
            same_window = abs(window - self.window) < _SAME_WINDOW
            if same_window and self.refilled:
                return
        counted_locally = same_window or self.refilled
        self.limit = headers.limit
        self.remaining = (
            min(self.remaining, headers.remaining) if counted_locally else headers.remaining
        )
        self.reset_at = now + headers.reset_after
        self.period = max(self.period, headers.reset_after)
        self.window = window
        self.refilled = False

    def exhaust(self, now: float, retry_after: float) -> None:
        """A 429 for this bucket: nothing more until `retry_after` has passed."""
        self.remaining = 0
        self.reset_at = max(self.reset_at, now + retry_after)
        self.refilled = False


def _float_or_none(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


@dataclass
class SlidingWindow:
    """At most `limit` requests in any `period` seconds, as the server sees them.

    The server sees a request at some moment between its sending and its
    answer, so a request holds its slot from sending until `period` after its
    answer: then no `period`-long window of arrivals can hold more than
    `limit`, however the transport delays each one.
    """

    limit: int
    period: float
    in_flight: int = 0
    _answered: collections.deque[float] = field(default_factory=collections.deque)

    def delay(self, now: float) -> float | None:
        """Seconds until one more request fits; None while every slot awaits an answer."""
        while self._answered and self._answered[0] <= now - self.period:
            self._answered.popleft()
        if len(self._answered) + self.in_flight < self.limit:
            return 0.0
        if not self._answered:
            return None
        return self._answered[0] + self.period - now

    def take(self) -> None:
        """A request is being sent."""
        self.in_flight += 1

    def release(self, now: float) -> None:
        """A request was answered (or failed) at `now`."""
        self.in_flight -= 1
        self._answered.append(now)


@dataclass
class InvalidRequestCounter:
    """Invalid responses (401, 403, 429) within the last `period` seconds."""

    limit: int = INVALID_LIMIT
    period: float = INVALID_PERIOD
    _times: collections.deque[float] = field(default_factory=collections.deque)

    def record(self, now: float) -> None:
        """Count one invalid response."""
        self._times.append(now)

    def count(self, now: float) -> int:
        """How many invalid responses the current window holds."""
        while self._times and self._times[0] <= now - self.period:
            self._times.popleft()
        return len(self._times)

    def exhausted(self, now: float) -> bool:
        """Whether one more invalid response would come too close to Discord's ban."""
        return self.count(now) >= self.limit


class RateLimiter:
    """Decides how long each request waits: its bucket, the global block, the global cap."""

    def __init__(
        self,
        clock: Clock,
        sleep: Sleep,
        *,
        global_limit: int = GLOBAL_LIMIT,
        global_period: float = GLOBAL_PERIOD,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._route_hashes: dict[str, str] = {}
        self._buckets: dict[str, Bucket] = {}
        self._global_until = 0.0
        self._cap = SlidingWindow(global_limit, global_period)
        self._cap_lock = asyncio.Lock()
        self._cap_released = asyncio.Event()

    def bucket_key(self, route: CompiledRoute) -> str:
        """The name of the bucket a request on this route spends from."""
        name = self._route_hashes.get(route.route.key, route.route.key)
        return f"{name}:{route.major}"

    def bucket(self, route: CompiledRoute) -> Bucket:
        """The bucket a request on this route spends from."""
        key = self.bucket_key(route)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > _PRUNE_ABOVE:
                self._prune(self._clock())
            bucket = self._buckets[key] = Bucket()
        return bucket

    @property
    def global_until(self) -> float:
        """Clock time until which bot routes are globally blocked."""
        return self._global_until

    async def acquire(self, route: CompiledRoute) -> float:
        """Wait until the request may be sent; return the seconds waited."""
        waited = 0.0
        bucket = self.bucket(route)
        async with bucket.lock:
            while (delay := bucket.delay(self._clock())) > 0:
                waited += delay
                await self._sleep(delay)
            bucket.take(self._clock())
        if not route.route.is_interaction_webhook:
            while (delay := self._global_until - self._clock()) > 0:
                waited += delay
                await self._sleep(delay)
        async with self._cap_lock:
            while (cap_delay := self._cap.delay(self._clock())) != 0:
                started = self._clock()
                if cap_delay is None:
                    self._cap_released.clear()
                    await self._cap_released.wait()
                else:
                    await self._sleep(cap_delay)
                waited += self._clock() - started
            self._cap.take()
        return waited

    def release(self) -> None:
        """The request let through by `acquire` is over: call exactly once, answered or not."""
        self._cap.release(self._clock())
        self._cap_released.set()

    def update(self, route: CompiledRoute, headers: Mapping[str, str]) -> None:
        """Learn the route's bucket from a response's headers."""
        parsed = parse_bucket_headers(headers)
        if parsed is None:
            return
        self._route_hashes[route.route.key] = parsed.bucket
        self.bucket(route).update(parsed, self._clock())

    def rate_limited(self, route: CompiledRoute, retry_after: float, *, is_global: bool) -> None:
        """Record a 429: block the route's bucket, or every bot route when global."""
        now = self._clock()
        if is_global:
            self._global_until = max(self._global_until, now + retry_after)
        # Interaction webhooks never wait for the global block, so a global 429 on one
        # must still hold back its own bucket, or the request would be resent at once.
        if not is_global or route.route.is_interaction_webhook:
            self.bucket(route).exhaust(now, retry_after)

    def _prune(self, now: float) -> None:
        stale = [
            key
            for key, bucket in self._buckets.items()
            if bucket.reset_at < now and not bucket.lock.locked()
        ]
        for key in stale:
            del self._buckets[key]
