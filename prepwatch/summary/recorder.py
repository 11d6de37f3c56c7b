"""Keep a thinned history of a collector's samples while a job runs (for the summary).

Ranks that exit keep their last counters (a finished job's totals survive its process),
and the history is thinned by halves so memory stays bounded on a week-long run.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from prepwatch.diagnosis.series import Snapshot, Window, carry_forward, from_metrics

MAX_SNAPSHOTS = 240


class SeriesRecorder:
    def __init__(
        self,
        collect: Callable[[], Any],
        every: float = 2.0,
        clock: Callable[[], float] = time.time,
        on_error: Optional[Callable] = None,
    ) -> None:
        self._collect = collect
        self._every = every
        self._clock = clock
        self._on_error = on_error
        self.started = clock()
        self.snapshots: list[Snapshot] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def sample(self) -> None:
        try:
            snap = from_metrics(self._collect(), self._clock())
        except Exception as exc:  # never disturb the job
            if self._on_error:
                self._on_error("summary", exc)
            return
        with self._lock:
            prev = self.snapshots[-1] if self.snapshots else None
            self.snapshots.append(carry_forward(prev, snap))
            if len(self.snapshots) > MAX_SNAPSHOTS:
                self.snapshots = self.snapshots[:1] + self.snapshots[1:-1:2] + self.snapshots[-1:]

    def start(self) -> SeriesRecorder:
        self._thread = threading.Thread(target=self._loop, name="prepwatch-summary", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        self.sample()
        while not self._stop.wait(self._every):
            self.sample()

    def stop(self) -> Window:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()
        with self._lock:
            return Window(list(self.snapshots), start=self.started)
