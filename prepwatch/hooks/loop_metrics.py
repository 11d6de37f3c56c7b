"""The loop's own metrics, pre-bound so a batch costs a few attribute updates."""

from __future__ import annotations

import time

import numpy as np

from prepwatch.context import Context
from prepwatch.metrics import STEP_BUCKETS, WAIT_BUCKETS

RING = 512  # steps in the rolling p50/p99/CV window (power of two: cheap index mask)


class LoopMetrics:
    """Owns the loop metric children and the rolling step-time window.

    Writers are the training loop only. The ring of recent step periods is a
    preallocated list written with a masked index; percentiles are computed at
    scrape time on a copy.
    """

    def __init__(self, ctx: Context) -> None:
        reg = ctx.registry
        self.data_wait = reg.histogram(
            "prepwatch_data_wait_seconds",
            "Time the training loop blocked waiting for the next batch.",
            buckets=WAIT_BUCKETS,
        ).labels()
        self.step = reg.histogram(
            "prepwatch_step_duration_seconds",
            "Period from one batch reaching the loop to the next.",
            buckets=STEP_BUCKETS,
        ).labels()
        self.first_wait = reg.histogram(
            "prepwatch_first_batch_wait_seconds",
            "Wait for the first batch of each pass over a loader (includes worker start-up).",
            buckets=STEP_BUCKETS,
        ).labels()
        self.steps = reg.counter("prepwatch_steps_total", "Batches handed to the loop.").labels()
        self.samples = reg.counter(
            "prepwatch_samples_total", "Samples handed to the training loop."
        ).labels()
        self.workers = reg.gauge(
            "prepwatch_dataloader_workers", "num_workers of the wrapped DataLoader."
        ).labels()
        self.workers.set(float("nan"))
        self.ring = [0.0] * RING
        self.ring_pos = 0
        # perf_counter of the last batch; converted to wall time at scrape (no time.time()
        # on the hot path).
        self.last_batch_perf = float("nan")
        # perf_counter when the loop asked for the first batch of the current pass; NaN once
        # it arrived. A hang before any batch (workers that never start) has no last step to
        # age, so the stall alert ages this instead.
        self.first_wait_started_perf = float("nan")
        # Seconds a framework integration marked as not part of the next step period (an
        # evaluation or checkpoint between two batches); taken off that period, then zeroed.
        self.excluded = 0.0

        last = reg.gauge(
            "prepwatch_last_step_timestamp_seconds", "Unix time the last batch reached the loop."
        ).labels()
        last.set_function(lambda: self._wall_time(self.last_batch_perf))
        pending = reg.gauge(
            "prepwatch_first_batch_wait_started_timestamp_seconds",
            "Unix time the loop asked for the first batch of a pass that has not arrived yet.",
        ).labels()
        pending.set_function(lambda: self._wall_time(self.first_wait_started_perf))
        p50 = reg.gauge(
            "prepwatch_step_duration_p50_seconds", "Median step period over the last 512 steps."
        ).labels()
        p99 = reg.gauge(
            "prepwatch_step_duration_p99_seconds", "99th percentile step period, last 512 steps."
        ).labels()
        cv = reg.gauge(
            "prepwatch_step_duration_cv",
            "Coefficient of variation (std/mean) of the step period over the last 512 steps.",
        ).labels()
        p50.set_function(lambda: self._window_stat("p50"))
        p99.set_function(lambda: self._window_stat("p99"))
        cv.set_function(lambda: self._window_stat("cv"))

    @staticmethod
    def _wall_time(perf: float) -> float:
        if perf != perf:
            return float("nan")
        return time.time() - (time.perf_counter() - perf)

    def window(self) -> np.ndarray:
        n = min(self.ring_pos, RING)
        return np.asarray(self.ring[:n] if self.ring_pos < RING else list(self.ring), dtype=float)

    def _window_stat(self, which: str) -> float:
        values = self.window()
        if values.size < 2:
            return float("nan")
        if which == "p50":
            return float(np.percentile(values, 50))
        if which == "p99":
            return float(np.percentile(values, 99))
        mean = float(values.mean())
        return float(values.std() / mean) if mean > 0 else float("nan")
