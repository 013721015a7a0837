"""Prometheus metrics of the web and the worker, and their per-minute totals in Redis.

Each process builds its metrics on a registry handed in (nothing is registered
at import). The front door pays one histogram observation per request and one
counter increment per interaction, into LoopHistogram and LoopCounter: it
counts on its event loop's thread alone, so they skip the lock prometheus_client
takes per update (a microsecond of a PING's 85). Once a second a `WindowFlusher`
adds what the histograms and counters gained since the last flush to the
per-minute counters in Redis that GET /health reads (health.MinuteWindow).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from health import LATENCY_BUCKETS, MinuteWindow

logger = logging.getLogger(__name__)

# Finer than the per-minute buckets at the low end: a deferral takes milliseconds.
RESPONSE_BUCKETS: Final = (0.001, 0.0025, 0.005, *LATENCY_BUCKETS)
JOB_BUCKETS: Final = (*LATENCY_BUCKETS, 300.0, 900.0, 3600.0)
FAST_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RATE_BUCKETS: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
# Outcomes that count as failures in the error rate of GET /health.
ERROR_OUTCOMES: Final = frozenset({"error", "unavailable", "failed"})

# requests, errors, counts per per-minute bucket (not cumulative)
Snapshot = tuple[int, int, list[int]]


# Label combinations a LoopCounter keeps; more (which no real traffic makes) go to one overflow.
_MAX_LABEL_SETS: Final = 256
_OVERFLOW: Final = "other"


class LoopCounter:
    """A labelled counter updated from one thread only: an increment is a dict addition."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...]) -> None:
        """Add one to the count of `labels` (one value per label name)."""
        values = self.values
        if labels not in values and len(values) >= _MAX_LABEL_SETS:
            labels = (_OVERFLOW,) * len(self.labelnames)
        values[labels] = values.get(labels, 0.0) + 1.0

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        return [family]

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]


class LoopHistogram:
    """A histogram updated from one thread only: an observation is a bisect and two additions."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = [float(bound) for bound in buckets]
        # One count per bound (values up to it, above the one before), then +Inf.
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation of `value` (seconds)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterable[Metric]:
        cumulative: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            total += count
            cumulative.append((_le(bound), float(total)))
        return [
            HistogramMetricFamily(
                self.name, self.documentation, buckets=cumulative, sum_value=self.sum
            )
        ]

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]


def _le(bound: float) -> str:
    # As prometheus_client writes a bucket's bound (its Go-style float, for these bounds).
    return "+Inf" if bound == float("inf") else repr(bound)


class WebMetrics:
    """What the front door counts."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.interactions = LoopCounter(
            "interactions",
            "Interactions answered by the front door, by type, command and outcome",
            ["type", "command", "outcome"],
        )
        self.response_seconds = LoopHistogram(
            "interaction_response_seconds",
            "Time to answer POST /interactions (verify, admit, defer)",
            RESPONSE_BUCKETS,
        )
        registry.register(self.interactions)
        registry.register(self.response_seconds)

    def interaction_done(
        self, kind: int | None, command: str | None, outcome: str, seconds: float
    ) -> None:
        """Count and time one answered interaction (the endpoint's observer)."""
        self.interactions.inc(("none" if kind is None else str(kind), command or "none", outcome))
        self.response_seconds.observe(seconds)

    def snapshot(self) -> Snapshot:
        """Requests, failures and latency counts so far, for the per-minute window."""
        buckets = histogram_counts(self.response_seconds, {})
        return sum(buckets), outcome_errors(self.interactions), buckets


class WorkerMetrics:
    """What the worker counts; also the Discord REST client's observer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.jobs = Counter(
            "worker_jobs", "Jobs run, by name and outcome", ["name", "outcome"], registry=registry
        )
        self.job_seconds = Histogram(
            "worker_job_seconds", "Job duration", ["name"], buckets=JOB_BUCKETS, registry=registry
        )
        self.queue_wait_seconds = Histogram(
            "worker_queue_wait_seconds",
            "Time from an interaction's creation until a worker started it",
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.commands = Counter(
            "commands",
            "Commands answered by the worker, by command and outcome",
            ["command", "outcome"],
            registry=registry,
        )
        self.search_seconds = Histogram(
            "vector_search_seconds",
            "Retrieval of the best messages for a query (vector search and row lookup)",
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.database_seconds = Histogram(
            "database_seconds",
            "Database statements timed by the worker, by operation",
            ["operation"],
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.llm_tokens = Counter(
            "llm_tokens", "Tokens read and generated by the model", ["kind"], registry=registry
        )
        self.llm_tokens_per_second = Histogram(
            "llm_tokens_per_second",
            "Generation speed of each answer",
            buckets=RATE_BUCKETS,
            registry=registry,
        )
        self.messages_synced = Counter(
            "messages_synced",
            "Messages written by syncs, by change",
            ["change"],
            registry=registry,
        )
        self.discord_requests = Counter(
            "discord_requests",
            "Discord REST requests by route and status (0: no response)",
            ["route", "status"],
            registry=registry,
        )
        self.discord_request_seconds = Histogram(
            "discord_request_seconds",
            "Discord REST request duration by route",
            ["route"],
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.rate_limit_wait_seconds = Histogram(
            "discord_rate_limit_wait_seconds",
            "Time a Discord request waited for a rate limit, by route",
            ["route"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )

    def job_done(self, name: str, outcome: str, seconds: float) -> None:
        """One job finished with `outcome` ("failed" when it raised)."""
        self.jobs.labels(name, outcome).inc()
        self.job_seconds.labels(name).observe(seconds)

    def generation_done(self, prompt_tokens: int, tokens: int, tokens_per_second: float) -> None:
        """One generation finished."""
        self.llm_tokens.labels("prompt").inc(prompt_tokens)
        self.llm_tokens.labels("generated").inc(tokens)
        if tokens:
            self.llm_tokens_per_second.observe(tokens_per_second)

    def synced(self, new: int, edited: int, deleted: int) -> None:
        """A sync wrote these changes."""
        for change, count in (("new", new), ("edited", edited), ("deleted", deleted)):
            if count:
                self.messages_synced.labels(change).inc(count)

    def request_done(self, route: str, status: int, seconds: float) -> None:
        """One Discord REST exchange finished (RestObserver)."""
        self.discord_requests.labels(route, str(status)).inc()
        self.discord_request_seconds.labels(route).observe(seconds)

    def rate_limit_wait(self, route: str, seconds: float) -> None:
        """A Discord request waited for a rate limit (RestObserver)."""
        self.rate_limit_wait_seconds.labels(route).observe(seconds)

    def interaction_snapshot(self, job: str) -> Snapshot:
        """Runs, failures and duration counts of one job, for the per-minute window."""
        buckets = histogram_counts(self.job_seconds, {"name": job})
        return sum(buckets), outcome_errors(self.jobs, {"name": job}), buckets


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
