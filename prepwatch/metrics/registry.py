"""Registry: the set of families and collectors one process exports.

It is a prometheus_client "collector" (anything with ``collect()``), so
``prometheus_client.generate_latest(registry)`` renders it. Identity labels
(``run``, ``rank``) are not stored on every series: ``LabelledView`` adds them at
exposition time, so the hot path never carries them.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable, Iterator, Protocol, Sequence

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from prepwatch.metrics.instruments import CounterFamily, GaugeFamily, HistogramFamily, _Family

log = logging.getLogger("prepwatch")


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class Registry:
    """Families created here, plus any extra collectors; names are unique."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        self._collectors: list[tuple[str, Collector]] = []
        # Set by the owner (see prepwatch.context) so a failing collector is counted.
        self.on_collect_error: Callable[[str, BaseException], None] | None = None

    def _add(self, family: _Family) -> _Family:
        with self._lock:
            existing = self._families.get(family.name)
            if existing is not None:
                if type(existing) is not type(family) or existing.labelnames != family.labelnames:
                    raise ValueError(f"metric {family.name} already registered differently")
                return existing
            self._families[family.name] = family
            return family

    def histogram(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
        buckets: Sequence[float],
    ) -> HistogramFamily:
        return self._add(HistogramFamily(name, documentation, labelnames, buckets=buckets))  # type: ignore[return-value]

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> CounterFamily:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        return self._add(CounterFamily(name, documentation, labelnames))  # type: ignore[return-value]

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> GaugeFamily:
        return self._add(GaugeFamily(name, documentation, labelnames))  # type: ignore[return-value]

    def register(self, collector: Collector, component: str = "collector") -> None:
        """Add a custom collector (computed at scrape time, off the training loop)."""
        with self._lock:
            self._collectors.append((component, collector))

    def get(self, name: str) -> _Family | None:
        return self._families.get(name)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            families = list(self._families.values())
            collectors = list(self._collectors)
        # Custom collectors first: a failure among them is then counted in this same scrape.
        for component, collector in collectors:
            try:
                metrics = list(collector.collect())
            except Exception as exc:
                self._report(component, exc)
                continue
            yield from metrics
        for family in families:
            try:
                yield family.collect()
            except Exception as exc:  # a scrape must not fail because one family did
                self._report(family.name, exc)

    def _report(self, component: str, exc: BaseException) -> None:
        if self.on_collect_error is not None:
            self.on_collect_error(component, exc)
        else:
            log.warning("prepwatch: collecting %s failed: %r", component, exc)


def add_labels(metric: Metric, labels: dict[str, str]) -> Metric:
    """Copy ``metric`` with ``labels`` added to every sample (existing labels win)."""
    out = Metric(metric.name, metric.documentation, metric.type, metric.unit)
    for s in metric.samples:
        if s.name.endswith("_created"):
            continue  # prometheus_client noise; timestamps are exported explicitly
        merged = dict(labels)
        merged.update(s.labels)
        out.samples.append(Sample(s.name, merged, s.value, s.timestamp, s.exemplar))
    return out


class LabelledView:
    """A collector that renders ``source`` with identity labels added to every sample."""

    def __init__(self, source: Collector, labels: Callable[[], dict[str, str]] | dict[str, str]):
        self._source = source
        self._labels = labels

    def collect(self) -> Iterator[Metric]:
        labels = self._labels() if callable(self._labels) else self._labels
        for metric in self._source.collect():
            yield add_labels(metric, labels)
