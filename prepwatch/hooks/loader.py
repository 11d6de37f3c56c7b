"""Wrap the iterable the training loop consumes and time what the loop waits for."""

from __future__ import annotations

import time
from numbers import Integral
from typing import Any, Callable, Generic, Iterable, Iterator, Optional, TypeVar, Union

from prepwatch.errors import ErrorSink
from prepwatch.hooks.batch_size import BatchSizer
from prepwatch.hooks.loop_metrics import RING, LoopMetrics
from prepwatch.hooks.worker_stats import WorkerStats

T = TypeVar("T")
_MASK = RING - 1
MAX_BATCH_SAMPLES = 1 << 32  # a batch_size= answer above this is a bug, not a batch


def _out_of_range(n: int) -> ValueError:
    return ValueError(
        f"batch_size= callable returned {n}, outside 0..{MAX_BATCH_SAMPLES}: not counted "
        "(prepwatch_samples_total is a counter and never goes backwards)"
    )


def _wrong_count_type(n: Any) -> Optional[Exception]:
    """A batch_size= callable must answer with an int; anything else is said once.

    A callable returning a tensor would make every later batch a tensor add (a kernel
    launch on CUDA) and every scrape a device sync.
    """
    if isinstance(n, Integral) and not isinstance(n, bool):
        return None if 0 <= n <= MAX_BATCH_SAMPLES else _out_of_range(n)
    return TypeError(
        f"batch_size= callable returned {type(n).__name__}, not int: return a Python int "
        "(e.g. int(batch['mask'].sum()) or len(batch['ids'])); counting samples by the "
        "batch's shape instead"
    )


def _is_dataloader(obj: Any) -> bool:
    try:
        from torch.utils.data import DataLoader
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(obj, DataLoader)


class WatchedLoader(Generic[T]):
    """Iterable proxy: yields exactly the batches of the wrapped iterable.

    Per batch it does two clock reads, two histogram observations, a counter update
    and a ring-buffer write (~1 us; see bench/). Attribute access falls through to
    the wrapped object, so ``loader.dataset`` or ``loader.sampler.set_epoch`` keep
    working.
    """

    def __init__(
        self,
        iterable: Iterable[T],
        loop: LoopMetrics,
        worker_stats: WorkerStats,
        errors: ErrorSink,
        *,
        batch_size: Union[int, Callable[[Any], int], None] = None,
        dataloader: Any = None,
        worker_timing: bool = True,
    ) -> None:
        if isinstance(iterable, type):
            raise TypeError(
                f"watch.loader() got the class {iterable.__name__}, not an instance: build it "
                f"first, e.g. watch.loader({iterable.__name__}(dataset, batch_size=64, "
                "num_workers=4))"
            )
        if not hasattr(iterable, "__iter__"):
            raise TypeError(
                f"watch.loader() needs an iterable of batches (a DataLoader, a generator, "
                f"a list...), got {type(iterable).__name__}"
            )
        if dataloader is not None and not _is_dataloader(dataloader):
            raise TypeError(
                "watch.loader(dataloader=...) must be the torch.utils.data.DataLoader behind "
                f"the iterable, got {type(dataloader).__name__}"
            )
        if batch_size is not None and not callable(batch_size):
            if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
                raise ValueError(
                    f"batch_size must be a positive int or a callable(batch) -> int, "
                    f"got {batch_size!r}"
                )
        self._iterable = iterable
        self._loop = loop
        self._errors = errors
        if callable(batch_size):
            self._sizer: Callable[[Any], int] = batch_size
        else:
            self._sizer = BatchSizer(batch_size)
        dl = dataloader if dataloader is not None else (iterable if _is_dataloader(iterable) else None)
        # accelerate's prepared loaders pass for DataLoaders; the one whose workers run is inside
        dl = getattr(dl, "base_dataloader", dl) if dl is not None else None
        if dl is not None:
            loop.workers.set(float(dl.num_workers))
            if worker_timing:
                try:
                    worker_stats.attach(dl)
                except Exception as exc:
                    self._errors.report("worker_hook", exc)

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "_iterable" not in self.__dict__:  # e.g. during copy/pickle
            raise AttributeError(name)
        return getattr(self._iterable, name)

    def __iter__(self) -> Iterator[T]:
        return self._generate(iter(self._iterable))

    def _generate(self, it: Iterator[T]) -> Iterator[T]:
        loop = self._loop
        clock = time.perf_counter
        sizer = self._sizer
        t0 = clock()
        loop.first_wait_started_perf = t0
        try:
            batch = next(it)
        except StopIteration:
            return
        finally:
            loop.first_wait_started_perf = float("nan")
        t1 = clock()
        loop.last_batch_perf = t1  # first: a failing sizer must not hide progress
        try:
            loop.first_wait.observe(t1 - t0)
            loop.steps.value += 1
            n = sizer(batch)
            wrong = _wrong_count_type(n)
            if wrong is not None:
                sizer = BatchSizer()  # for the rest of this pass
                loop.samples.value += sizer(batch)
                raise wrong
            loop.samples.value += n
        except Exception as exc:
            self._errors.report("loader", exc)
        prev = t1
        yield batch
        wait, step, steps, samples = loop.data_wait, loop.step, loop.steps, loop.samples
        ring = loop.ring
        while True:
            t0 = clock()
            try:
                batch = next(it)
            except StopIteration:
                return
            t1 = clock()
            try:
                wait.observe(t1 - t0)
                period = t1 - prev
                if loop.excluded:  # framework time (evaluation, checkpoints) marked by an integration
                    period -= loop.excluded
                    loop.excluded = 0.0
                step.observe(period)
                pos = loop.ring_pos
                ring[pos & _MASK] = period
                loop.ring_pos = pos + 1
                loop.last_batch_perf = t1
                steps.value += 1
                n = sizer(batch)
                if not 0 <= n <= MAX_BATCH_SAMPLES:
                    raise _out_of_range(n)
                samples.value += n
            except Exception as exc:
                self._errors.report("loader", exc)
            prev = t1
            yield batch
