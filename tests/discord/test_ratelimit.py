"""Pure units for the rate-limit bookkeeping, on a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from app.discord import routes
from app.discord.ratelimit import (
    Bucket,
    BucketHeaders,
    InvalidRequestCounter,
    RateLimiter,
    SlidingWindow,
    parse_bucket_headers,
)


@dataclass
class FakeClock:
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def headers(
    remaining: int, reset_after: float, reset: str = "1.0", limit: int = 5
) -> BucketHeaders:
    return BucketHeaders("abc", limit, remaining, reset_after, reset)


def test_parse_bucket_headers_reads_discord_headers() -> None:
    parsed = parse_bucket_headers(
        {
            "x-ratelimit-bucket": "abcd",
            "x-ratelimit-limit": "5",
            "x-ratelimit-remaining": "4",
            "x-ratelimit-reset-after": "0.250",
            "x-ratelimit-reset": "1700000000.250",
        }
    )
    assert parsed == BucketHeaders("abcd", 5, 4, 0.25, "1700000000.250")
    assert parse_bucket_headers({}) is None
    assert parse_bucket_headers({"x-ratelimit-bucket": "x", "x-ratelimit-limit": "?"}) is None


def test_unknown_bucket_never_waits_until_a_429() -> None:
    bucket = Bucket()
    for _ in range(10):
        assert bucket.delay(0.0) == 0.0
        bucket.take(0.0)
    bucket.exhaust(0.0, 2.0)
    assert bucket.delay(0.5) == 1.5
    assert bucket.delay(2.0) == 0.0


def test_exhausted_bucket_waits_for_reset_then_refills() -> None:
    bucket = Bucket()
    bucket.update(headers(remaining=1, reset_after=2.0), now=10.0)
    assert bucket.delay(10.0) == 0.0
    bucket.take(10.0)
    assert bucket.delay(10.5) == 1.5
    bucket.take(12.0)  # the window has reset: a full window minus this request
    assert bucket.remaining == 4


def test_late_response_of_same_window_cannot_raise_remaining() -> None:
    bucket = Bucket()
    bucket.update(headers(remaining=4, reset_after=1.0, reset="100.0"), now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)  # two in flight: 2 left locally
    bucket.update(headers(remaining=3, reset_after=0.9, reset="100.0"), now=0.1)
    assert bucket.remaining == 2


def test_refill_is_corrected_by_the_new_window_only() -> None:
    bucket = Bucket()
    bucket.update(headers(remaining=0, reset_after=1.0, reset="100.0", limit=3), now=0.0)
    for _ in range(3):
        bucket.take(1.0)  # refilled locally: 3 sent in the new window
    assert bucket.remaining == 0
    # A late answer from the old window changes nothing.
    bucket.update(headers(remaining=0, reset_after=0.0, reset="100.0", limit=3), now=1.05)
    assert (bucket.remaining, bucket.reset_at) == (0, 2.0)
    # The new window's first answer says 2 left, but the client already spent them.
    bucket.update(headers(remaining=2, reset_after=0.9, reset="101.0", limit=3), now=1.1)
    assert bucket.remaining == 0
    assert bucket.delay(1.1) > 0.9 - 1e-9
    # An answer from an older window than the known one is ignored.
    bucket.update(headers(remaining=3, reset_after=5.0, reset="100.0", limit=3), now=1.2)
    assert bucket.remaining == 0


def test_sliding_window_counts_from_the_answer() -> None:
    window = SlidingWindow(limit=3, period=1.0)
    for _ in range(3):
        assert window.delay(0.0) == 0.0
        window.take()
    assert window.delay(0.1) is None  # all three still in flight
    window.release(0.2)
    assert window.delay(0.3) == pytest.approx(0.9)
    assert window.delay(1.2) == 0.0


def test_invalid_counter_forgets_after_its_period() -> None:
    counter = InvalidRequestCounter(limit=3, period=600.0)
    for t in (0.0, 1.0, 2.0):
        counter.record(t)
    assert counter.exhausted(10.0)
    assert counter.count(600.5) == 2
    assert not counter.exhausted(600.5)


async def test_limiter_waits_for_bucket_then_global_block() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, clock.sleep)
    route = routes.GET_CHANNEL_MESSAGES.compile(channel_id=1)
    other_channel = routes.GET_CHANNEL_MESSAGES.compile(channel_id=2)
    assert await limiter.acquire(route) == 0.0
    limiter.update(
        route,
        {
            "x-ratelimit-bucket": "h",
            "x-ratelimit-limit": "1",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset-after": "0.5",
            "x-ratelimit-reset": "1700000000.500",
        },
    )
    assert await limiter.acquire(route) == 0.5
    # Another channel is another bucket: no wait.
    assert await limiter.acquire(other_channel) == 0.0
    limiter.rate_limited(route, 2.0, is_global=True)
    assert await limiter.acquire(other_channel) == 2.0
    webhook = routes.PATCH_ORIGINAL_RESPONSE.compile(webhook_id=1, webhook_token="t")
    limiter.rate_limited(route, 2.0, is_global=True)
    assert await limiter.acquire(webhook) == 0.0


async def test_limiter_global_cap() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, clock.sleep, global_limit=50, global_period=1.0)
    sent: list[float] = []
    for channel in range(120):
        await limiter.acquire(routes.GET_CHANNEL.compile(channel_id=channel))
        sent.append(clock.now)
        clock.now += 0.001
        limiter.release()
    busiest = max(sum(1 for t in sent if start <= t < start + 1.0) for start in sent)
    assert busiest == 50
    # Bursts of 50, then a wait for the oldest answer to leave the window.
    assert len(clock.sleeps) == 2


async def test_limiter_global_cap_waits_for_answers_in_flight() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, clock.sleep, global_limit=2, global_period=1.0)
    for channel in range(2):
        await limiter.acquire(routes.GET_CHANNEL.compile(channel_id=channel))
    third = asyncio.create_task(limiter.acquire(routes.GET_CHANNEL.compile(channel_id=3)))
    await asyncio.sleep(0)
    assert not third.done()
    clock.now += 5.0  # a slow answer
    limiter.release()
    assert await third == pytest.approx(6.0)
    assert clock.now == pytest.approx(1006.0)
