"""Host-side per-class totals, the recall over a time window, and evaluation passes.

Two kinds of split:

* stream (the augmented training stream): recall and accuracy over the last
  ``window_seconds``, kept as a ring of time buckets so old counts fall out;
* pass (clean evaluation): recall and accuracy over the last *completed* evaluation
  pass, plus the pass before it, so an alert can ask for two evaluations in a row.

Counts arrive in flush order (see class_counts); a pass is closed by a delivery that
says so, which keeps the pass boundary exact even when copies complete late.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

WINDOW_BUCKETS = 10
# Evaluation passes pooled into prepwatch_class_recent_{samples,correct}: the rare-class
# alert compares the pool of the last L passes with the best such pool in 6 h. L is half
# the passes completed in the last 6 h, 2 to 4 (recent_pool): bench/sim_rare_class_alert.py
# found pooling the most powerful test at the same false-alarm rate, 2 passes best at 2-6
# passes per 6 h and 4 at 24 and more.
RECENT_PASSES = 4
RECENT_MIN = 2
CADENCE_WINDOW_S = 6 * 3600.0


def recent_pool(passes_in_window: int) -> int:
    """L for a cadence of ``passes_in_window`` passes per 6 h."""
    return int(min(RECENT_PASSES, max(RECENT_MIN, passes_in_window // 2)))


def recall_of(samples: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """correct / samples per class; NaN where a class had no samples (unknown, not 0)."""
    out = np.full(samples.shape, np.nan)
    np.divide(correct, samples, out=out, where=samples > 0)
    return out


def accuracy_of(samples: np.ndarray, correct: np.ndarray) -> float:
    total = int(samples.sum())
    return float(correct.sum()) / total if total else float("nan")


class SplitStats:
    """Totals for one split (bins as in class_counts: [0] <0, [1..C] classes, [C+1] >=C,
    [C+2] ignored); ``samples``/``correct`` below are the C class bins only."""

    def __init__(self, name: str, num_classes: int, kind: str, window_seconds: float,
                 clock=time.monotonic, wall=time.time) -> None:
        if kind not in ("stream", "pass"):
            raise ValueError(f"kind must be 'stream' or 'pass', got {kind!r}")
        self.name = name
        self.kind = kind
        self.num_classes = num_classes
        self._clock = clock
        self._wall = wall
        width = num_classes + 3
        self.total_samples = np.zeros(width, dtype=np.int64)
        self.total_correct = np.zeros(width, dtype=np.int64)
        # stream: time buckets
        self._bucket_s = max(window_seconds, 1e-3) / WINDOW_BUCKETS
        self._buckets: deque[tuple[float, np.ndarray, np.ndarray]] = deque()
        self._win_n = np.zeros(num_classes, dtype=np.int64)
        self._win_k = np.zeros(num_classes, dtype=np.int64)
        # pass: the open pass and the last two completed ones
        self._pass_n = np.zeros(num_classes, dtype=np.int64)
        self._pass_k = np.zeros(num_classes, dtype=np.int64)
        # what ``recall`` is computed from: the window (stream) or the last pass (pass)
        self.basis_samples = np.zeros(num_classes, dtype=np.int64)
        self.basis_correct = np.zeros(num_classes, dtype=np.int64)
        self.recall = np.full(num_classes, np.nan)
        self.recall_previous = np.full(num_classes, np.nan)
        self.accuracy = float("nan")
        self.accuracy_previous = float("nan")
        self.rounds = 0
        self.last_round_timestamp = float("nan")
        # pass: per-class counts of the last RECENT_PASSES completed passes, and their sums
        self._recent: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=RECENT_PASSES)
        self._pass_times: deque[float] = deque()
        self.recent_samples = np.zeros(num_classes, dtype=np.int64)
        self.recent_correct = np.zeros(num_classes, dtype=np.int64)
        self.recent_passes = 0

    # -- deliveries ----------------------------------------------------------------------
    def add(self, samples_bins: np.ndarray, correct_bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add one flush; returns the per-class deltas (C entries)."""
        self.total_samples += samples_bins
        self.total_correct += correct_bins
        c = self.num_classes
        n = samples_bins[1 : c + 1]
        k = correct_bins[1 : c + 1]
        if self.kind == "stream":
            self._add_window(n, k)
        else:
            self._pass_n += n
            self._pass_k += k
        return n, k

    def _add_window(self, n: np.ndarray, k: np.ndarray) -> None:
        now = self._clock()
        if self._buckets and now - self._buckets[-1][0] < self._bucket_s:
            start, bn, bk = self._buckets[-1]
            bn += n
            bk += k
        else:
            self._buckets.append((now, n.copy(), k.copy()))
        self._win_n += n
        self._win_k += k
        horizon = now - self._bucket_s * WINDOW_BUCKETS
        while len(self._buckets) > 1 and self._buckets[0][0] < horizon:
            _, on, ok = self._buckets.popleft()
            self._win_n -= on
            self._win_k -= ok
        self.basis_samples = self._win_n.copy()
        self.basis_correct = self._win_k.copy()
        self.recall = recall_of(self._win_n, self._win_k)
        self.accuracy = accuracy_of(self._win_n, self._win_k)

    def close_pass(self) -> bool:
        """End the open evaluation pass; False (and nothing changes) if it counted nothing."""
        if int(self._pass_n.sum()) == 0:
            return False
        self.recall_previous = self.recall
        self.accuracy_previous = self.accuracy
        self.recall = recall_of(self._pass_n, self._pass_k)
        self.accuracy = accuracy_of(self._pass_n, self._pass_k)
        self.basis_samples = self._pass_n
        self.basis_correct = self._pass_k
        self._recent.append((self._pass_n, self._pass_k))
        now = self._clock()
        self._pass_times.append(now)
        while self._pass_times and self._pass_times[0] < now - CADENCE_WINDOW_S:
            self._pass_times.popleft()
        pool = list(self._recent)[-recent_pool(len(self._pass_times)):]
        self.recent_passes = len(pool)
        self.recent_samples = sum(n for n, _ in pool)
        self.recent_correct = sum(k for _, k in pool)
        self._pass_n = np.zeros_like(self._pass_n)
        self._pass_k = np.zeros_like(self._pass_k)
        self.rounds += 1
        self.last_round_timestamp = self._wall()
        return True

    # -- views ------------------------------------------------------------------------------
    @property
    def samples(self) -> np.ndarray:
        return self.total_samples[1 : self.num_classes + 1]

    @property
    def correct(self) -> np.ndarray:
        return self.total_correct[1 : self.num_classes + 1]

    @property
    def out_of_range(self) -> int:
        c = self.num_classes
        return int(self.total_samples[0] + self.total_samples[c + 1])

    @property
    def ignored(self) -> int:
        return int(self.total_samples[self.num_classes + 2])
