"""Per-sample timing of a DataLoader worker's copy of the dataset.

The worker's dataset object gets a subclass whose ``__getitem__``/``__getitems__``/
``__iter__`` are timed into the worker's row (``stage="total"``). Only the worker's copy
changes class; the user's object in the main process is never modified.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from prepwatch.hooks import worker_recorder as _wr

_nested = _wr._nested


def _timed_getitem(orig: Callable[..., Any]) -> Callable[..., Any]:
    def __getitem__(self: Any, index: Any) -> Any:
        rec = _wr._current
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
        rec = _wr._current
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
            rec = _wr._current
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
