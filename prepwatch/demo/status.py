"""The demo's live status line, computed from the same metrics Prometheus scrapes."""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Optional, TextIO

WATCHED = {
    "prepwatch_steps_total": "steps",
    "prepwatch_samples_total": "samples",
    "prepwatch_data_wait_seconds_sum": "wait",
    "prepwatch_step_duration_seconds_sum": "step_sum",
    "prepwatch_step_duration_p50_seconds": "p50",
    "prepwatch_step_duration_p99_seconds": "p99",
}


def read_totals(collector: Any) -> dict[str, float]:
    """Sum the watched samples over every rank the collector serves."""
    totals: dict[str, float] = {}
    for metric in collector.collect():
        for s in metric.samples:
            key = WATCHED.get(s.name)
            if key is not None and not math.isnan(s.value):
                totals[key] = totals.get(key, 0.0) + s.value
    return totals


def format_status(prev: dict[str, float], cur: dict[str, float], dt: float, elapsed: float) -> str:
    steps = cur.get("steps", 0.0) - prev.get("steps", 0.0)
    if steps < 0:
        return f"[{elapsed:5.0f}s] the job has ended"
    if steps == 0:
        if cur.get("steps", 0.0) > 0:
            return f"[{elapsed:5.0f}s] no step in the last {dt:.0f}s"
        return f"[{elapsed:5.0f}s] waiting for the first steps..."
    wait = cur.get("wait", 0.0) - prev.get("wait", 0.0)
    period = cur.get("step_sum", 0.0) - prev.get("step_sum", 0.0)
    share = wait / period if period > 0 else 0.0
    samples = cur.get("samples", 0.0) - prev.get("samples", 0.0)
    return (
        f"[{elapsed:5.0f}s] {steps / dt:6.1f} steps/s  {samples / dt:7.0f} samples/s  "
        f"data-wait {share:6.1%}  step p50 {cur.get('p50', 0) * 1e3:6.1f} ms  "
        f"p99 {cur.get('p99', 0) * 1e3:6.1f} ms"
    )


class StatusPrinter:
    def __init__(self, collector: Any, out: TextIO, every: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._collector = collector
        self._out = out
        self._every = every
        self._clock = clock
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="prepwatch-status", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        t0 = last_t = self._clock()
        prev = read_totals(self._collector)
        while not self._stop.wait(self._every):
            now = self._clock()
            try:
                cur = read_totals(self._collector)
                line = format_status(prev, cur, now - last_t, now - t0)
            except Exception as exc:  # the demo must not die of its status line
                line = f"status unavailable: {exc!r}"
                cur = prev
            print(line, file=self._out, flush=True)
            prev, last_t = cur, now

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
