"""Snapshots of prepwatch's series, and the arithmetic the engine needs on them.

A :class:`Snapshot` is every sample of an endpoint (or a Prometheus instant query) at one
time; a :class:`Window` is a list of them, oldest first. Counters are read as the change
between the first and last snapshot (like ``increase()`` over the window), gauges at the
last one. No I/O here: callers parse text or query results into snapshots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]


def labels_of(mapping: Mapping[str, str]) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items()))


@dataclass
class Snapshot:
    """Samples at one time: ``{(name, sorted label pairs): value}``."""

    t: float
    samples: dict[Key, float] = field(default_factory=dict)

    def select(self, name: str, **match: str) -> Iterator[tuple[dict[str, str], float]]:
        for (n, labels), v in self.samples.items():
            if n != name:
                continue
            d = dict(labels)
            if all(d.get(k) == val for k, val in match.items()):
                yield d, v


def parse_text(body: str, t: float) -> Snapshot:
    """A snapshot from the Prometheus text exposition format (a /metrics page)."""
    from prometheus_client.parser import text_string_to_metric_families

    snap = Snapshot(t)
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            snap.samples[(s.name, labels_of(s.labels))] = float(s.value)
    return snap


def from_metrics(metrics: Iterable[Any], t: float) -> Snapshot:
    """A snapshot from prometheus_client Metric objects (a collector's collect())."""
    snap = Snapshot(t)
    for metric in metrics:
        for s in metric.samples:
            snap.samples[(s.name, labels_of(s.labels))] = float(s.value)
    return snap


def from_query_result(result: list[dict[str, Any]], t: float) -> Snapshot:
    """A snapshot from a Prometheus /api/v1/query vector result."""
    snap = Snapshot(t)
    for row in result:
        metric = dict(row["metric"])
        name = metric.pop("__name__", "")
        snap.samples[(name, labels_of(metric))] = float(row["value"][1])
    return snap


def carry_forward(previous: Optional[Snapshot], current: Snapshot) -> Snapshot:
    """``current`` plus every series of ``previous`` it lacks (a rank that has exited keeps
    its last counters, so a run's totals survive its processes)."""
    if previous is None:
        return current
    merged = dict(previous.samples)
    merged.update(current.samples)
    return Snapshot(current.t, merged)


GROUP = ("run", "rank")


def group_key(labels: Mapping[str, str], by: tuple[str, ...] = GROUP) -> tuple[str, ...]:
    return tuple(labels.get(k, "") for k in by)


@dataclass
class Window:
    """Snapshots oldest first; at least one. With one, counters count from zero."""

    snapshots: list[Snapshot]

    def __post_init__(self) -> None:
        if not self.snapshots:
            raise ValueError("a window needs at least one snapshot")

    @property
    def first(self) -> Snapshot:
        return self.snapshots[0] if len(self.snapshots) > 1 else Snapshot(self.start, {})

    @property
    def last(self) -> Snapshot:
        return self.snapshots[-1]

    start: float = 0.0

    @property
    def seconds(self) -> float:
        t0 = self.snapshots[0].t if len(self.snapshots) > 1 else self.start
        return max(self.last.t - t0, 1e-9)

    def base(self, span: Optional[float] = None) -> Snapshot:
        """The snapshot a ``[span]`` range starts from: the latest at or before
        ``last.t - span``, else the first (a short run is judged over all of it)."""
        if span is None or len(self.snapshots) < 2:
            return self.first
        chosen = self.snapshots[0]
        for snap in self.snapshots[:-1]:
            if snap.t <= self.last.t - span + 1e-6:
                chosen = snap
        return chosen

    def span_seconds(self, span: Optional[float] = None) -> float:
        base = self.base(span)
        t0 = base.t if len(self.snapshots) > 1 else self.start
        return max(self.last.t - t0, 1e-9)

    def increase(
        self, name: str, by: tuple[str, ...] = GROUP, span: Optional[float] = None, **match: str
    ) -> dict[tuple[str, ...], float]:
        """Per group, the counter's growth over the window (a reset counts from zero)."""
        before: dict[Key, float] = {}
        for labels, v in self.base(span).select(name, **match):
            before[(name, labels_of(labels))] = v
        out: dict[tuple[str, ...], float] = {}
        for labels, v in self.last.select(name, **match):
            b = before.get((name, labels_of(labels)), 0.0)
            d = v - b if v >= b else v
            if math.isnan(d):
                continue
            g = group_key(labels, by)
            out[g] = out.get(g, 0.0) + d
        return out

    def gauge(
        self, name: str, by: tuple[str, ...] = GROUP, agg: str = "sum", **match: str
    ) -> dict[tuple[str, ...], float]:
        return gauge_of(self.last, name, by, agg, **match)

    def quantile(
        self, q: float, name: str, by: tuple[str, ...] = GROUP, span: Optional[float] = None, **match: str
    ) -> dict[tuple[str, ...], float]:
        """``histogram_quantile(q, sum by (by, le) (increase(name_bucket)))``."""
        buckets = self.increase(f"{name}_bucket", by + ("le",), span, **match)
        per: dict[tuple[str, ...], list[tuple[float, float]]] = {}
        for g, v in buckets.items():
            per.setdefault(g[:-1], []).append((float(g[-1]), v))
        return {g: histogram_quantile(q, b) for g, b in per.items()}


def gauge_of(
    snap: Snapshot, name: str, by: tuple[str, ...] = GROUP, agg: str = "sum", **match: str
) -> dict[tuple[str, ...], float]:
    groups: dict[tuple[str, ...], list[float]] = {}
    for labels, v in snap.select(name, **match):
        if not math.isnan(v):
            groups.setdefault(group_key(labels, by), []).append(v)
    fn = {"sum": sum, "max": max, "min": min, "avg": lambda xs: sum(xs) / len(xs)}[agg]
    return {g: fn(vs) for g, vs in groups.items()}


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile on (upper bound, cumulative count) pairs."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][0] != math.inf:
        return math.nan
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for i, (bound, count) in enumerate(buckets):
        if count >= rank:
            if bound == math.inf:
                return buckets[i - 1][0] if i > 0 else math.nan
            if i == 0 and bound <= 0:
                return bound
            width = count - prev_count
            if width <= 0:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / width
        prev_bound, prev_count = bound, count
    return buckets[-2][0] if len(buckets) > 1 else math.nan


def median(values: Iterable[float]) -> float:
    xs = sorted(v for v in values if not math.isnan(v))
    if not xs:
        return math.nan
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
