"""Per-sample timings inside DataLoader workers, carried home in shared memory.

Why shared memory and not prometheus_client's multiprocess mode or the batch itself:

* multiprocess mode writes one file per pid; workers restarted every epoch pile up
  files until a scrape takes seconds (client_python #367).
* riding on the batch changes the type the loop receives, which breaks prefetchers
  and ``.to(device)`` calls on user code paths.

Each wrapped DataLoader gets one small float64 tensor in shared memory (torch's own
mechanism, the one datasets already use), one row per ``worker_id``. A worker adds
bucket counts and sums to its row; a restarted worker with the same id keeps adding
to the same row, so the totals stay monotonic and the memory is fixed: nothing grows
with restarts. The exporter sums rows at scrape time. Reads are lock-free: a scrape
may see a bucket count before its sum (one observation of skew).

A table lives as long as its ``WorkerInit`` (held by the DataLoader, by each of its
iterators and so by every running worker). When that is collected, its column sums are
folded into one "retired" row and the table (its shared-memory segment and, under
torch's ``file_descriptor`` strategy, its fd) is dropped: a job that builds a DataLoader
per evaluation keeps a fixed number of tables and fds, and counters never go down.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from typing import Any, Callable, Iterator, Optional

import numpy as np
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from prepwatch.context import Context
from prepwatch.hooks.dataset_timing import instrument_dataset
from prepwatch.hooks.open_hook import instrument_open, open_hook_active
from prepwatch.hooks.worker_recorder import (
    FILE_BYTES_SLOT,
    FILE_OPEN_SLOT,
    FILE_READ_SLOT,
    HIST_SLOTS,
    ROW,
    STAGES,
    WIDTH,
    Recorder,
    recorder,
    set_recorder,
)
from prepwatch.metrics import FETCH_BUCKETS, IO_BUCKETS
from prepwatch.metrics.buckets import FILE_BYTES_BUCKETS


def _new_rows(n: int, shared: bool) -> tuple[Any, np.ndarray]:
    if shared:
        import torch

        tensor = torch.zeros(n * ROW, dtype=torch.float64).share_memory_()
        return tensor, tensor.numpy().reshape(n, ROW)
    array = np.zeros((n, ROW), dtype=np.float64)
    return None, array



class WorkerInit:
    """``worker_init_fn`` wrapper: points this worker's recorder at its shared row.

    Picklable (spawn start method) as long as the user's own function is.
    """

    def __init__(
        self, user_fn: Optional[Callable[[int], None]], shared: Any, time_samples: bool,
        instrument_open: bool = False,
    ) -> None:
        self.user_fn = user_fn
        self.shared = shared
        self.time_samples = time_samples
        self.instrument_open = instrument_open

    def __call__(self, worker_id: int) -> None:
        try:
            rows = self.shared.numpy().reshape(-1, ROW)
            rec = Recorder(rows[worker_id % rows.shape[0]])
            set_recorder(rec)
            if self.time_samples:
                from torch.utils.data import get_worker_info

                info = get_worker_info()
                if info is not None and not instrument_dataset(info.dataset):
                    rec.error()
            if self.instrument_open:
                # fork inherits the parent's open hook; spawn/forkserver workers need it here
                if not open_hook_active():
                    instrument_open()
        except Exception:
            # Never fail the worker; the error count reaches the exporter through the row.
            rec = recorder()
            if rec is not None:
                rec.error()
        if self.user_fn is not None:
            self.user_fn(worker_id)


class WorkersAlreadyRunning(RuntimeError):
    """A DataLoader's persistent workers were started before prepwatch's worker hook."""


def _workers_running(dataloader: Any) -> int:
    """Workers of the DataLoader's kept iterator (persistent_workers=True) still alive."""
    it = getattr(dataloader, "_iterator", None)
    if it is None or getattr(it, "_shutdown", True):
        return 0
    return len(getattr(it, "_workers", None) or ())


def _retire(stats_ref: weakref.ReferenceType[WorkerStats], rows: np.ndarray, pid: int) -> None:
    # weakref.finalize callback: holds neither the WorkerInit nor its DataLoader. Runs
    # wherever the last reference went, any thread, possibly one that holds the lock.
    if os.getpid() != pid:  # a forked child dropping its copy of the object
        return
    stats = stats_ref()
    if stats is not None:
        stats._pending.append(rows)
        stats._fold_pending(blocking=False)


class WorkerStats:
    """Collects the rows of every wrapped DataLoader and the main process' own row.

    Tables of DataLoaders that are gone are folded into ``_retired`` so that memory and
    fds stay bounded while exported totals stay monotonic.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        _, main_rows = _new_rows(1, shared=False)
        # Both are replaced, never mutated in place, so a snapshot taken under the lock
        # stays consistent after it is released.
        self._tables: list[np.ndarray] = [main_rows]
        self._retired = np.zeros(ROW)
        self._pending: deque[np.ndarray] = deque()  # tables whose owner was collected
        self.main_recorder = Recorder(main_rows[0])
        ctx.registry.register(self, "worker_stats")
        ctx.errors.count_from("worker", self._worker_errors)

    def activate(self) -> None:
        """Make this process' stage timers and IO hooks record into the main row."""
        set_recorder(self.main_recorder, stages_outside_samples=False)

    def attach(self, dataloader: Any, time_samples: bool = True) -> bool:
        """Install the worker hook on a DataLoader with workers. Idempotent.

        Persistent workers that already run never call the new hook, so that case is
        reported (once per DataLoader, as a second attach returns early) instead of
        leaving its timings silently at zero.
        """
        if getattr(dataloader, "num_workers", 0) <= 0:
            return False
        current = dataloader.worker_init_fn
        if isinstance(current, WorkerInit):
            return True
        running = _workers_running(dataloader)
        shared, rows = _new_rows(int(dataloader.num_workers), shared=True)
        init = WorkerInit(current, shared, time_samples, open_hook_active())
        dataloader.worker_init_fn = init
        # The table outlives the DataLoader as long as an iterator (and its workers) does.
        finalizer = weakref.finalize(init, _retire, weakref.ref(self), rows, os.getpid())
        finalizer.atexit = False
        self._fold_pending(blocking=True)
        with self._lock:
            self._tables = self._tables + [rows]
        if running:
            self._ctx.errors.report("worker_hook", WorkersAlreadyRunning(
                f"watch.loader() got a DataLoader whose {running} persistent worker(s) were "
                "already running (it was iterated before it was wrapped); those workers "
                "never run prepwatch's worker_init_fn, so their per-sample timings "
                "(prepwatch_sample_fetch_seconds) stay zero. Fix: wrap the DataLoader "
                "with watch.loader() before its first iteration."
            ))
        return True

    def _fold_pending(self, blocking: bool) -> None:
        """Fold the sums of collected DataLoaders' tables into the retired row."""
        if not self._pending or not self._lock.acquire(blocking):
            return  # not blocking: whoever holds the lock, or the next scrape, folds them
        try:
            while self._pending:
                rows = self._pending.popleft()
                self._retired = self._retired + rows.sum(axis=0)
                self._tables = [t for t in self._tables if t is not rows]
        finally:
            self._lock.release()

    def totals(self) -> np.ndarray:
        """Column sums over live tables plus the retired row: what the scrape exports."""
        self._fold_pending(blocking=True)
        with self._lock:
            tables, retired = self._tables, self._retired
        total = retired.copy()
        for table in tables:
            total += table.sum(axis=0)
        return total

    def _worker_errors(self) -> float:
        return float(self.totals()[len(HIST_SLOTS) * WIDTH + 2])

    def collect(self) -> Iterator[Metric]:
        total = self.totals()
        hist = total[: len(HIST_SLOTS) * WIDTH].reshape(len(HIST_SLOTS), WIDTH)
        fetch = HistogramMetricFamily(
            "prepwatch_sample_fetch_seconds",
            "Per-sample time inside DataLoader workers, by stage.",
            labels=["stage"],
        )
        for i, stage_name in enumerate(STAGES):
            fetch.add_metric([stage_name], *_buckets(hist[i], FETCH_BUCKETS))
        yield fetch
        opens = HistogramMetricFamily(
            "prepwatch_file_open_seconds", "Latency of file opens made by dataset code."
        )
        opens.add_metric([], *_buckets(hist[FILE_OPEN_SLOT], IO_BUCKETS))
        yield opens
        reads = HistogramMetricFamily(
            "prepwatch_file_read_seconds",
            "Time from open to close of each file dataset code read (instrumented opens).",
        )
        reads.add_metric([], *_buckets(hist[FILE_READ_SLOT], IO_BUCKETS))
        yield reads
        sizes = HistogramMetricFamily(
            "prepwatch_file_read_bytes",
            "Bytes read from each file dataset code read, counted at close.",
        )
        sizes.add_metric([], *_buckets(hist[FILE_BYTES_SLOT], FILE_BYTES_BUCKETS))
        yield sizes
        counters = total[len(HIST_SLOTS) * WIDTH :]
        yield CounterMetricFamily(  # the open hook counts opens in the latency histogram only
            "prepwatch_file_opens", "File opens made by dataset code.",
            value=float(hist[FILE_OPEN_SLOT][: len(IO_BUCKETS) + 1].sum()),
        )
        yield CounterMetricFamily(
            "prepwatch_read_bytes", "Bytes read through instrumented files.", value=counters[1]
        )


def _buckets(row: np.ndarray, bounds: tuple[float, ...]) -> tuple[list[tuple[str, float]], float]:
    running = 0.0
    out = []
    for i, le in enumerate(bounds):
        running += row[i]
        out.append((floatToGoString(le), running))
    running += row[len(bounds)]
    out.append(("+Inf", running))
    return out, float(row[-1])
