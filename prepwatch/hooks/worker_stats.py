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
import time
import weakref
from bisect import bisect_left
from collections import deque
from typing import Any, Callable, Iterator, Optional

import numpy as np
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from prepwatch.context import Context
from prepwatch.metrics import FETCH_BUCKETS, IO_BUCKETS

STAGES = ("total", "read", "decode", "transform", "other")
HIST_SLOTS = [(f"fetch:{s}", FETCH_BUCKETS) for s in STAGES] + [("file_open", IO_BUCKETS)]
SLOT_INDEX = {name: i for i, (name, _) in enumerate(HIST_SLOTS)}
FILE_OPEN_SLOT = SLOT_INDEX["file_open"]
COUNTERS = ("file_opens", "read_bytes", "errors")
WIDTH = max(len(b) for _, b in HIST_SLOTS) + 2  # bucket counts, +Inf, then the sum
ROW = len(HIST_SLOTS) * WIDTH + len(COUNTERS)


def _new_rows(n: int, shared: bool) -> tuple[Any, np.ndarray]:
    if shared:
        import torch

        tensor = torch.zeros(n * ROW, dtype=torch.float64).share_memory_()
        return tensor, tensor.numpy().reshape(n, ROW)
    array = np.zeros((n, ROW), dtype=np.float64)
    return None, array


class Recorder:
    """Writes timings of one process into one row. Single writer per row.

    Writes go through a flat ``memoryview`` of the row: indexing it costs half of
    numpy scalar indexing, which matters for per-open and per-sample timings.
    """

    __slots__ = ("_mv", "_bounds", "_counters")

    def __init__(self, row: np.ndarray) -> None:
        self._mv = memoryview(np.ascontiguousarray(row)).cast("B").cast("d")
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

    def file_open(self, seconds: float) -> None:
        mv = self._mv
        base = FILE_OPEN_SLOT * WIDTH
        mv[base + bisect_left(IO_BUCKETS, seconds)] += 1
        mv[base + WIDTH - 1] += seconds
        mv[self._counters] += 1

    def read_bytes(self, n: int) -> None:
        self._mv[self._counters + 1] += n

    def error(self) -> None:
        self._mv[self._counters + 2] += 1


_current: Optional[Recorder] = None
_nested = threading.local()


def recorder() -> Optional[Recorder]:
    """The recorder of this process: a worker's row, the main process' row, or None."""
    return _current


def _set_recorder(rec: Optional[Recorder]) -> None:
    global _current
    _current = rec


def _forget_recorder_in_child() -> None:
    # A forked child inherits the parent's recorder: the main process' private row (a
    # copy-on-write duplicate nobody reads) or, in a worker that forks, a shared row that
    # then has two writers. Record nothing instead; an attached DataLoader worker sets
    # its own row in WorkerInit, which runs after the fork.
    _set_recorder(None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_recorder_in_child)


class stage:
    """Time a stage of per-sample work inside dataset code::

        with prepwatch.stage("decode"):
            image = decode(raw)

    Works in workers and in the main process; a no-op when prepwatch is not active.
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
        if rec is not None:
            try:
                rec.fetch(self._name, time.perf_counter() - self._t0)
            except Exception:
                pass


# -- dataset instrumentation (runs inside a worker, on the worker's copy) ------------------


def _timed_getitem(orig: Callable[..., Any]) -> Callable[..., Any]:
    def __getitem__(self: Any, index: Any) -> Any:
        rec = _current
        if rec is None or getattr(_nested, "on", False):
            return orig(self, index)
        t0 = time.perf_counter()
        _nested.on = True
        try:
            return orig(self, index)
        finally:
            _nested.on = False
            rec.observe(0, time.perf_counter() - t0)

    return __getitem__


def _timed_getitems(orig: Callable[..., Any]) -> Callable[..., Any]:
    def __getitems__(self: Any, indices: Any) -> Any:
        rec = _current
        if rec is None or getattr(_nested, "on", False):
            return orig(self, indices)
        t0 = time.perf_counter()
        _nested.on = True
        try:
            return orig(self, indices)
        finally:
            _nested.on = False
            n = max(len(indices), 1)
            rec.observe(0, (time.perf_counter() - t0) / n, n)

    return __getitems__


def _timed_iter(orig: Callable[..., Any]) -> Callable[..., Any]:
    def __iter__(self: Any) -> Iterator[Any]:
        it = orig(self)
        clock = time.perf_counter
        while True:
            t0 = clock()
            try:
                item = next(it)
            except StopIteration:
                return
            rec = _current
            if rec is not None:
                rec.observe(0, clock() - t0)
            yield item

    return __iter__


def instrument_dataset(dataset: Any) -> bool:
    """Give this (worker-local) dataset object a subclass whose fetch methods are timed.

    Swapping ``__class__`` only touches the worker's copy of the dataset; the user's
    object in the main process is never modified. Returns False when the class
    cannot be swapped (C types, __slots__ layouts): timings then come only from
    explicit ``prepwatch.stage`` blocks.
    """
    cls = type(dataset)
    if getattr(cls, "_prepwatch_timed", False):
        return True
    from torch.utils.data import IterableDataset

    namespace: dict[str, Any] = {"_prepwatch_timed": True, "__module__": cls.__module__}
    if isinstance(dataset, IterableDataset):
        namespace["__iter__"] = _timed_iter(cls.__iter__)
    else:
        namespace["__getitem__"] = _timed_getitem(cls.__getitem__)
        if hasattr(cls, "__getitems__"):
            namespace["__getitems__"] = _timed_getitems(cls.__getitems__)
    try:
        dataset.__class__ = type(cls.__name__, (cls,), namespace)
    except TypeError:
        return False
    return True


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
            _set_recorder(rec)
            if self.time_samples:
                from torch.utils.data import get_worker_info

                info = get_worker_info()
                if info is not None and not instrument_dataset(info.dataset):
                    rec.error()
            if self.instrument_open:
                # fork inherits the parent's open hook; spawn/forkserver workers need it here
                from prepwatch.sources.io import instrument_open, open_hook_active

                if not open_hook_active():
                    instrument_open()
        except Exception:
            # Never fail the worker; the error count reaches the exporter through the row.
            rec = _current
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
        errors = ctx.registry.get("prepwatch_internal_errors_total")
        if errors is not None:
            errors.labels("worker").set_function(self._worker_errors)  # type: ignore[attr-defined]

    def activate(self) -> None:
        """Make this process' stage timers and IO hooks record into the main row."""
        _set_recorder(self.main_recorder)

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
        from prepwatch.sources.io import open_hook_active

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
        counters = total[len(HIST_SLOTS) * WIDTH :]
        yield CounterMetricFamily(
            "prepwatch_file_opens", "File opens made by dataset code.", value=counters[0]
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
