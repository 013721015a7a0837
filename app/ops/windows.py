"""Per-minute request counters in Redis, shared by every web and worker process.

Each process counts in its own Prometheus metrics; once a second a
`WindowFlusher` adds what they gained since the last flush to per-minute hashes
in Redis (`MinuteWindow`). GET /health reads the last minutes back, so its error
rate and 95th percentile cover every process, not just the one it asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.jobs import STATS_KEY_PREFIX

logger = logging.getLogger(__name__)

# Response-time buckets (seconds) of the per-minute counters; the last one is +Inf.
LATENCY_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Outcomes that count as failures in the error rate of GET /health.
ERROR_OUTCOMES: Final = frozenset({"error", "unavailable", "failed"})
# A minute's counters outlive every window /health reads.
_STATS_TTL: Final = 15 * 60

# requests, errors, counts per per-minute bucket (not cumulative)
Snapshot = tuple[int, int, list[int]]


class MinuteWindow:
    """Per-minute request counters in Redis: hashes `health:stats:SOURCE:MINUTE`.

    Fields: `n` (requests), `err` (failed ones) and `b0`..`bN` (how many fell in
    each LATENCY_BUCKETS bucket, the last one open-ended).
    """

    def __init__(self, redis: Redis, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._clock = clock

    async def add(
        self, source: str, requests: int, errors: int, buckets: Sequence[int], when: float
    ) -> None:
        """Add counts to the minute containing `when`."""
        key = f"{STATS_KEY_PREFIX}{source}:{int(when // 60)}"
        pipe = self._redis.pipeline(transaction=False)
        if requests:
            pipe.hincrby(key, "n", requests)
        if errors:
            pipe.hincrby(key, "err", errors)
        for index, count in enumerate(buckets):
            if count:
                pipe.hincrby(key, f"b{index}", count)
        pipe.expire(key, _STATS_TTL)
        await pipe.execute()

    async def totals(self, source: str, minutes: int) -> tuple[int, int, list[int]]:
        """Requests, errors and bucket counts of `source` over the last `minutes` minutes."""
        now = int(self._clock() // 60)
        keys = [f"{STATS_KEY_PREFIX}{source}:{m}" for m in range(now - minutes + 1, now + 1)]
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        requests = errors = 0
        buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        for row in await pipe.execute():
            fields = {k.decode(): int(v) for k, v in row.items()}
            requests += fields.get("n", 0)
            errors += fields.get("err", 0)
            for index in range(len(buckets)):
                buckets[index] += fields.get(f"b{index}", 0)
        return requests, errors, buckets


def percentile(buckets: Sequence[int], fraction: float) -> float:
    """The upper bound of the bucket holding the given fraction of the counts (inf: beyond)."""
    total = sum(buckets)
    if total == 0:
        return 0.0
    rank = fraction * total
    seen = 0
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
        seen += count
        if seen >= rank:
            return bound
    return float("inf")


def histogram_counts(histogram: Collector, labels: Mapping[str, str]) -> list[int]:
    """Observations per per-minute bucket (LATENCY_BUCKETS, then +Inf) of matching children."""
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    for family in histogram.collect():
        previous: dict[tuple[tuple[str, str], ...], float] = {}
        for sample in family.samples:
            if not sample.name.endswith("_bucket") or not _matches(sample.labels, labels):
                continue
            key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            bound = float(sample.labels["le"])
            # Buckets are cumulative; what this one adds lands in the first coarse bucket
            # whose bound is at least this one's.
            counts[_coarse_index(bound)] += int(sample.value - previous.get(key, 0.0))
            previous[key] = sample.value
    return counts


def outcome_errors(counter: Collector, labels: Mapping[str, str] | None = None) -> int:
    """How many counted events of matching children ended in a failure outcome."""
    total = 0.0
    for family in counter.collect():
        for sample in family.samples:
            if (
                sample.name.endswith("_total")
                and sample.labels.get("outcome") in ERROR_OUTCOMES
                and _matches(sample.labels, labels or {})
            ):
                total += sample.value
    return int(total)


def _matches(sample: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(sample.get(k) == v for k, v in wanted.items())


def _coarse_index(bound: float) -> int:
    for index, coarse in enumerate(LATENCY_BUCKETS):
        if bound <= coarse:
            return index
    return len(LATENCY_BUCKETS)


class WindowFlusher:
    """Adds what a snapshot gained since the last flush to the per-minute counters in Redis."""

    def __init__(
        self,
        window: MinuteWindow,
        source: str,
        snapshot: Callable[[], Snapshot],
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._window = window
        self._source = source
        self._snapshot = snapshot
        self._interval = interval
        self._clock = clock
        self._last: Snapshot = (0, 0, [0] * (len(LATENCY_BUCKETS) + 1))

    async def flush(self) -> None:
        """Write the counts gained since the last successful flush."""
        now = self._snapshot()
        requests = now[0] - self._last[0]
        errors = now[1] - self._last[1]
        buckets = [a - b for a, b in zip(now[2], self._last[2], strict=True)]
        if requests or errors:
            await self._window.add(self._source, requests, errors, buckets, self._clock())
        self._last = now

    async def run(self) -> None:
        """Flush every `interval` seconds until cancelled; a Redis outage loses nothing."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except (RedisError, OSError) as exc:
                # The counts stay in the snapshot and go out with the next flush.
                logger.warning("could not write the %s request counters: %s", self._source, exc)


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait for it to end."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
