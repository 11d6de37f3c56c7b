"""Find the batch size in whatever a DataLoader yields, cheaply.

The first batch is searched (tensors, arrays, tuples, lists, dicts, dataclass-like
objects); the path to the element that held the size is remembered, so later
batches cost one or two indexing operations instead of a walk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

Path = tuple[Any, ...]


def _leading_dim(obj: Any) -> Optional[int]:
    shape = getattr(obj, "shape", None)
    if shape is not None:
        try:
            return int(shape[0]) if len(shape) > 0 else None
        except (TypeError, IndexError, ValueError):
            return None
    return None


def find_path(batch: Any, depth: int = 0) -> Optional[Path]:
    """Path of keys/indices to the first array-like with a leading dimension."""
    if _leading_dim(batch) is not None:
        return ()
    if depth > 4:
        return None
    if isinstance(batch, Mapping):
        for key, value in batch.items():
            sub = find_path(value, depth + 1)
            if sub is not None:
                return (key,) + sub
        return None
    if isinstance(batch, (list, tuple)):
        for i, value in enumerate(batch[:8]):
            sub = find_path(value, depth + 1)
            if sub is not None:
                return (i,) + sub
        return None
    return None


class BatchSizer:
    """Callable returning the number of samples in a batch, or 0 when it cannot tell."""

    __slots__ = ("_path", "_fixed")

    def __init__(self, fixed: Optional[int] = None) -> None:
        self._path: Optional[Path] = None
        self._fixed = fixed

    def __call__(self, batch: Any) -> int:
        if self._fixed is not None:
            return self._fixed
        path = self._path
        if path is not None:
            obj = batch
            try:
                for key in path:
                    obj = obj[key]
                return int(obj.shape[0])
            except Exception:
                self._path = None
        path = find_path(batch)
        if path is not None:
            self._path = path
            obj = batch
            for key in path:
                obj = obj[key]
            return int(obj.shape[0])
        if isinstance(batch, (list, tuple)) and batch:
            return len(batch)  # a list of samples (e.g. strings) without arrays
        return 0
