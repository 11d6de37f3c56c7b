"""Metric primitives: single-writer instruments cheap enough for the training loop."""

from prepwatch.metrics.buckets import (
    FETCH_BUCKETS,
    IO_BUCKETS,
    STEP_BUCKETS,
    WAIT_BUCKETS,
    geometric_buckets,
)
from prepwatch.metrics.instruments import (
    CounterFamily,
    GaugeFamily,
    HistogramFamily,
)
from prepwatch.metrics.labels import sanitize_label_value
from prepwatch.metrics.registry import LabelledView, Registry

__all__ = [
    "FETCH_BUCKETS",
    "IO_BUCKETS",
    "STEP_BUCKETS",
    "WAIT_BUCKETS",
    "CounterFamily",
    "GaugeFamily",
    "HistogramFamily",
    "LabelledView",
    "Registry",
    "geometric_buckets",
    "sanitize_label_value",
]
