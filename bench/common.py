"""Paired, alternating measurements: the only honest way to see a few microseconds."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def alternate(bare: Callable[[], int], wrapped: Callable[[], int], rounds: int) -> dict[str, float]:
    """Run ``bare`` and ``wrapped`` alternately; each returns how many items it processed.

    Returns per-item seconds (median over rounds) and the median of the paired
    differences, so drift in machine load cancels out.
    """
    bare_t, wrapped_t, diffs = [], [], []
    bare(), wrapped()  # warm-up: workers, caches, allocator
    for i in range(rounds):
        order = (bare, wrapped) if i % 2 == 0 else (wrapped, bare)
        results = {}
        for fn in order:
            t0 = time.perf_counter()
            n = fn()
            results[fn] = (time.perf_counter() - t0) / max(n, 1)
        bare_t.append(results[bare])
        wrapped_t.append(results[wrapped])
        diffs.append(results[wrapped] - results[bare])
    b = statistics.median(bare_t)
    d = statistics.median(diffs)
    return {
        "bare_us": b * 1e6,
        "wrapped_us": statistics.median(wrapped_t) * 1e6,
        "overhead_us": d * 1e6,
        "overhead_ratio": d / b if b > 0 else float("nan"),
        "rounds": rounds,
    }
