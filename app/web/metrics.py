"""The front door's Prometheus metrics, counted without locks on the event loop's thread.

The front door pays one histogram observation per request and one counter
increment per interaction, into LoopHistogram and LoopCounter: it counts on its
event loop's thread alone, so they skip the lock prometheus_client takes per
update (a microsecond of a PING's 85). Nothing is registered at import: the
registry is handed in.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from app.ops.windows import LATENCY_BUCKETS, Snapshot, histogram_counts, outcome_errors

# Finer than the per-minute buckets at the low end: a deferral takes milliseconds.
RESPONSE_BUCKETS: Final = (0.001, 0.0025, 0.005, *LATENCY_BUCKETS)

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
