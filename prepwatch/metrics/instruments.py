"""Single-writer metric instruments for the hot path.

prometheus_client's ``Histogram.observe`` costs ~0.75 us here because every update
takes a lock; the per-batch budget for the whole loader hook is 3 us. The loop that
owns an instrument is its only writer, so updates are plain list/float operations
(~0.12 us). A scrape reads the values from another thread without a lock: it may
see an observation's bucket count before its sum, a skew of one observation that
Prometheus' rate() cannot tell from timing jitter.

Families render to prometheus_client's metric families at scrape time, so the
exposition format, escaping and content negotiation stay prometheus_client's.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Callable, Iterable, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

LabelValues = tuple[str, ...]


class Histogram:
    """Cumulative-at-scrape bucket counts; ``observe`` is one bisect and two adds."""

    __slots__ = ("upper", "counts", "sum")

    def __init__(self, upper: Sequence[float]) -> None:
        self.upper = tuple(upper)
        self.counts = [0] * (len(self.upper) + 1)  # last slot is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.upper, value)] += 1
        self.sum += value


class Counter:
    __slots__ = ("value", "function")

    def __init__(self) -> None:
        self.value = 0.0
        self.function: Callable[[], float] | None = None

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set_function(self, function: Callable[[], float]) -> None:
        """Read a monotonic total kept elsewhere (e.g. summed from worker processes)."""
        self.function = function

    def read(self) -> float:
        return self.value + (self.function() if self.function is not None else 0.0)


class Gauge:
    __slots__ = ("value", "function")

    def __init__(self) -> None:
        self.value = 0.0
        self.function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self.value = value

    def set_function(self, function: Callable[[], float]) -> None:
        """Compute the value at scrape time (for values that change on every step)."""
        self.function = function

    def read(self) -> float:
        return self.function() if self.function is not None else self.value


class _Family:
    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[LabelValues, object] = {}

    def _new_child(self) -> object:  # pragma: no cover - abstract
        raise NotImplementedError

    def labels(self, *values: object):  # noqa: ANN201 - returns the family's child type
        """Return (and cache) the child for these label values; bind it once, outside loops."""
        if len(values) != len(self.labelnames):
            raise ValueError(
                f"{self.name} takes labels {self.labelnames}, got {len(values)} values"
            )
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def remove(self, *values: object) -> None:
        self._children.pop(tuple(str(v) for v in values), None)

    def children(self) -> list[tuple[LabelValues, object]]:
        return list(self._children.items())

    def collect(self) -> Metric:  # pragma: no cover - abstract
        raise NotImplementedError


class HistogramFamily(_Family):
    kind = "histogram"

    def __init__(
        self, name: str, documentation: str, labelnames: Iterable[str] = (), *,
        buckets: Sequence[float],
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.buckets = tuple(buckets)
        self._le = [floatToGoString(b) for b in self.buckets] + ["+Inf"]

    def _new_child(self) -> Histogram:
        return Histogram(self.buckets)

    def labels(self, *values: object) -> Histogram:
        return super().labels(*values)  # type: ignore[return-value]

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in self.children():
            counts = list(child.counts)  # copy first: the writer may be mid-update
            total = child.sum
            running = 0.0
            cumulative = []
            for le, c in zip(self._le, counts):
                running += c
                cumulative.append((le, running))
            family.add_metric(list(key), cumulative, total)
        return family


class CounterFamily(_Family):
    kind = "counter"

    def _new_child(self) -> Counter:
        return Counter()

    def labels(self, *values: object) -> Counter:
        return super().labels(*values)  # type: ignore[return-value]

    def collect(self) -> Metric:
        name = self.name[:-6] if self.name.endswith("_total") else self.name
        family = CounterMetricFamily(name, self.documentation, labels=self.labelnames)
        for key, child in self.children():
            family.add_metric(list(key), child.read())
        return family


class GaugeFamily(_Family):
    kind = "gauge"

    def _new_child(self) -> Gauge:
        return Gauge()

    def labels(self, *values: object) -> Gauge:
        return super().labels(*values)  # type: ignore[return-value]

    def collect(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in self.children():
            value = child.read()
            if value is None or value != value:  # unknown: omit the series, never a fake 0
                continue
            family.add_metric(list(key), value)
        return family
