"""Histogram bucket layouts, chosen per quantity.

Geometric spacing keeps the relative error of ``histogram_quantile`` bounded over
the whole range: with a factor of 1.5 an interpolated p99 is within ~25% of the
truth whether a step takes 2 ms or 20 s, which the step-spread alert relies on.
"""

from __future__ import annotations


def geometric_buckets(start: float, stop: float, factor: float) -> tuple[float, ...]:
    """Upper bounds ``start, start*factor, ...`` up to and including the first >= stop.

    Values are rounded to 3 significant digits so ``le`` labels stay readable.
    """
    if not (start > 0 and stop > start and factor > 1):
        raise ValueError(f"need 0 < start < stop and factor > 1, got {start}, {stop}, {factor}")
    out: list[float] = []
    value = start
    while True:
        out.append(float(f"{value:.3g}"))
        if value >= stop:
            break
        value *= factor
    return tuple(sorted(set(out)))


# Step period: 0.5 ms .. ~2 min, factor 1.5 (31 buckets). Covers 1 ms to 60 s steps.
STEP_BUCKETS = geometric_buckets(0.0005, 120.0, 1.5)
# Data wait: a well-fed loop waits microseconds, a starved one seconds. 10 us .. ~2 min.
WAIT_BUCKETS = geometric_buckets(0.00001, 120.0, 2.0)
# Per-sample fetch in workers (read, decode, transform): 10 us .. ~1 min.
FETCH_BUCKETS = geometric_buckets(0.00001, 60.0, 2.0)
# File open latency: a cached open is ~2 us, a cold NFS/Lustre open tens of ms. 1 us .. ~16 s.
IO_BUCKETS = geometric_buckets(0.000001, 10.0, 2.0)
# Bytes read from one file, open to close: 256 B (a label file) .. 1 GiB (a shard), x4.
# Exact powers of two (geometric_buckets would round 4096 to 4100).
FILE_BYTES_BUCKETS = tuple(float(256 * 4**k) for k in range(12))
