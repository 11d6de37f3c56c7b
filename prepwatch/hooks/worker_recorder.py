"""The recorder: where per-sample and per-open timings of this process are written.

A leaf module (numpy and bucket layouts only): the open hook, stage timers, dataset
timing and the worker-stats collector all write through the :class:`Recorder` that
:func:`recorder` returns, so none of them needs to import the others. The row layout
(histogram slots, counters) is defined here once; ``worker_stats`` reads rows back.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from typing import Optional

import numpy as np

from prepwatch.metrics.buckets import FETCH_BUCKETS, FILE_BYTES_BUCKETS, IO_BUCKETS

STAGES = ("total", "read", "decode", "transform", "other")
HIST_SLOTS = [(f"fetch:{s}", FETCH_BUCKETS) for s in STAGES] + [
    ("file_open", IO_BUCKETS),
    ("file_read", IO_BUCKETS),  # one file, open to close: what a sample's read costs
    ("file_bytes", FILE_BYTES_BUCKETS),  # bytes read from one file, open to close
]
SLOT_INDEX = {name: i for i, (name, _) in enumerate(HIST_SLOTS)}
FILE_OPEN_SLOT = SLOT_INDEX["file_open"]
FILE_READ_SLOT = SLOT_INDEX["file_read"]
FILE_BYTES_SLOT = SLOT_INDEX["file_bytes"]
COUNTERS = ("file_opens", "read_bytes", "errors")
WIDTH = max(len(b) for _, b in HIST_SLOTS) + 2  # bucket counts, +Inf, then the sum
ROW = len(HIST_SLOTS) * WIDTH + len(COUNTERS)

# Cells the open hook (prepwatch/hooks/open_hook.py) writes itself, in line: a method call
# per open, read and close costs more than the writes (bench/bench_sources.py --io).
FILE_OPEN_BASE = FILE_OPEN_SLOT * WIDTH
FILE_READ_BASE = FILE_READ_SLOT * WIDTH
FILE_BYTES_BASE = FILE_BYTES_SLOT * WIDTH
SUM_AT = WIDTH - 1  # a histogram's sum, after its bucket counts and +Inf
READ_BYTES_AT = len(HIST_SLOTS) * WIDTH + COUNTERS.index("read_bytes")
# The "file_opens" counter cell is not written: prepwatch_file_opens_total is the count of
# the file_open histogram (one write fewer per open), read back in worker_stats.
_BYTES_EXP = [int(b).bit_length() - 1 for b in FILE_BYTES_BUCKETS]
if [float(2**e) for e in _BYTES_EXP] != list(FILE_BYTES_BUCKETS):
    raise ValueError("FILE_BYTES_BUCKETS must be powers of two (see FILE_BYTES_BUCKET_BY_BITS)")
# The bucket of n bytes without a search: n <= 2**e exactly when (n - 1).bit_length() <= e,
# so FILE_BYTES_BUCKET_BY_BITS[(n - 1).bit_length()] == bisect_left(FILE_BYTES_BUCKETS, n)
# for 0 <= n < 2**127 (a search costs twice as much, int against float four times).
FILE_BYTES_BUCKET_BY_BITS = tuple(bisect_left(_BYTES_EXP, b) for b in range(128))


class Recorder:
    """Writes timings of one process into one row. Single writer per row.

    Writes go through a flat ``memoryview`` of the row: indexing it costs half of
    numpy scalar indexing, which matters for per-open and per-sample timings.
    """

    __slots__ = ("_mv", "_bounds", "_counters", "cells")

    def __init__(self, row: np.ndarray) -> None:
        self._mv = memoryview(np.ascontiguousarray(row)).cast("B").cast("d")
        self.cells = self._mv  # the row, flat, for writers that inline (the open hook)
        if not np.shares_memory(row, np.frombuffer(self._mv, dtype=np.float64)):
            raise ValueError("Recorder needs a contiguous row to write into")
        self._bounds = [b for _, b in HIST_SLOTS]
        self._counters = len(HIST_SLOTS) * WIDTH

    def observe(self, slot: int, seconds: float, n: int = 1) -> None:
        base = slot * WIDTH
        mv = self._mv
        mv[base + bisect_left(self._bounds[slot], seconds)] += n
        mv[base + WIDTH - 1] += seconds * n

    def fetch(self, stage: str, seconds: float, n: int = 1) -> None:
        """Per-sample time of one stage (read, decode, transform, total, other)."""
        slot = SLOT_INDEX.get("fetch:" + stage)
        self.observe(SLOT_INDEX["fetch:other"] if slot is None else slot, seconds, n)

    def error(self) -> None:
        self._mv[self._counters + 2] += 1


_current: Optional[Recorder] = None
_nested = threading.local()


def recorder() -> Optional[Recorder]:
    """The recorder of this process: a worker's row, the main process' row, or None."""
    return _current


# Whether stage() blocks outside a timed sample count. In the main process they do not:
# nothing times a sample there (the fetch is the loop's data wait), so its stage blocks
# (evaluation loaders, num_workers=0) would make stage="read" outnumber stage="total".
_stages_outside_samples = True


def set_recorder(rec: Optional[Recorder], *, stages_outside_samples: bool = True) -> None:
    """Point this process' stage timers and open hook at ``rec`` (None: record nothing).

    ``stages_outside_samples=False`` (the main process): stage timers count only inside
    a timed sample, so per-stage counts are those of the samples ``stage="total"`` counts.
    """
    global _current, _stages_outside_samples
    _current = rec
    _stages_outside_samples = stages_outside_samples


def _forget_recorder_in_child() -> None:
    # A forked child inherits the parent's recorder: the main process' private row (a
    # copy-on-write duplicate nobody reads) or, in a worker that forks, a shared row that
    # then has two writers. Record nothing instead; an attached DataLoader worker sets
    # its own row in WorkerInit, which runs after the fork.
    set_recorder(None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_recorder_in_child)


class stage:
    """Time a stage of per-sample work inside dataset code::

        with prepwatch.stage("decode"):
            image = decode(raw)

    Counted in DataLoader workers (watched loaders); in the main process only inside a
    timed sample, so stage counts never exceed ``stage="total"``. A no-op when prepwatch
    is not active.
    """

    __slots__ = ("_name", "_t0")

    def __init__(self, name: str) -> None:
        self._name = name
        self._t0 = 0.0

    def __enter__(self) -> stage:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        rec = _current
        if rec is not None and (_stages_outside_samples or getattr(_nested, "on", False)):
            try:
                rec.fetch(self._name, time.perf_counter() - self._t0)
            except Exception:
                pass
