"""Find the batch size in whatever a DataLoader yields, cheaply.

Why a vote and not "the first tensor": ``default_collate`` stacks every field, so all
stacked fields share one leading dimension B; custom collates (detection's
``tuple(zip(*b))``, variable-length sequences) instead hand over per-sample lists, whose
*length* is B while their first element's leading dimension is a channel count or a
sequence length. So the first batch is read field by field:

* an array (tensor, ndarray) with at least one dimension says ``shape[0]``;
* a dict is a set of fields, each read on its own;
* a list/tuple below the top level whose items are all of one kind (arrays, dicts,
  strings/numbers, sequences) is a per-sample list: it says ``len()``, and, if its items
  are arrays sharing one leading dimension, that too (it may be a tuple of stacked
  fields, like the ``(y1, y2)`` of ``(x, (y1, y2))``); one whose items are of mixed kinds
  is a record of fields, each read on its own;
* the count the most fields say wins; ties go to a count above 1 (a 1-element side
  tensor such as a learning-rate scale is not a batch), then to a stacked leading
  dimension over a list length over an inner leading dimension, then to the larger count.

The top level is a list/tuple of fields ``(x, y)`` as ``default_collate`` makes, except
when it is plainly a list of samples, counted by ``len()``: its items are all non-arrays
(strings, numbers, dicts), or records such as ``(image, label)`` tuples, or three or
more of them disagree (no count is said by more than half of them: sequences of
different lengths). Two items that disagree are fields (``(x, side_tensor)``).
A list of N sequences of one kind and equal length M is ambiguous (N fields of M
samples, or N samples of M fields); the larger of N and M is taken as the batch.

The winner is cached as a strategy, a path of keys/indices and a kind ("dim0":
``shape[0]``; "len": ``len()``), with the batch's type, so later batches cost one or two
indexing operations. It is searched again when the type changes or the path fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

Path = tuple[Any, ...]

DIM0 = "dim0"
LEN = "len"

_SCAN = 64  # items of a list looked at while searching (the search runs once)
_MAX_DEPTH = 4

# Kinds of items, to tell a per-sample list (one kind) from a record of fields (mixed).
_ARRAY, _MAP, _SEQ, _LEAF = "array", "map", "seq", "leaf"

# Sources of a count, best first in a tie.
_STACKED, _LENGTH, _INNER = 2, 1, 0


class Strategy(NamedTuple):
    """Where the batch size lies: ``path`` of keys/indices, then ``shape[0]`` or ``len()``."""

    path: Path
    kind: str  # DIM0 or LEN


class _Candidate(NamedTuple):
    count: int
    source: int
    path: Path
    kind: str
    field: Path  # the field that said it: one vote per field


def _leading_dim(obj: Any) -> Optional[int]:
    shape = getattr(obj, "shape", None)
    if shape is not None:
        try:
            return int(shape[0]) if len(shape) > 0 else None
        except (TypeError, IndexError, ValueError):
            return None
    return None


def _kind(obj: Any) -> str:
    if _leading_dim(obj) is not None:
        return _ARRAY
    if isinstance(obj, Mapping):
        return _MAP
    if isinstance(obj, (list, tuple)):
        return _SEQ
    return _LEAF  # strings, numbers, 0-d arrays, None, other objects


def _item_kinds(seq: Any) -> set[str]:
    return {_kind(v) for v in seq[:_SCAN]}


def _collect(obj: Any, path: Path, depth: int, out: list[_Candidate]) -> None:
    """Append the counts one field (below the top level) says."""
    n = _leading_dim(obj)
    if n is not None:
        out.append(_Candidate(n, _STACKED, path, DIM0, path))
        return
    if depth > _MAX_DEPTH:
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            _collect(value, path + (key,), depth + 1, out)
        return
    if not isinstance(obj, (list, tuple)) or not obj:
        return
    if len(_item_kinds(obj)) > 1:  # a record such as (tensor, names): its items are fields
        for i, value in enumerate(obj[:_SCAN]):
            _collect(value, path + (i,), depth + 1, out)
        return
    out.append(_Candidate(len(obj), _LENGTH, path, LEN, path))
    dims = {_leading_dim(v) for v in obj[:_SCAN]}
    if len(dims) == 1 and None not in dims:
        out.append(_Candidate(dims.pop(), _INNER, path + (0,), DIM0, path))


def _choose(cands: list[_Candidate]) -> Optional[_Candidate]:
    """The count the most fields agree on; ties as in the module docstring."""
    if not cands:
        return None
    fields: dict[int, set[Path]] = {}
    for c in cands:
        fields.setdefault(c.count, set()).add(c.field)
    return max(
        cands,
        key=lambda c: (len(fields[c.count]), c.count > 1, c.source, c.count, -len(c.path)),
    )


def _top_level_is_samples(items: Any) -> bool:
    """Whether a top-level list/tuple holds samples rather than fields (x, y)."""
    kinds = [_kind(v) for v in items]
    if not any(k in (_ARRAY, _SEQ) for k in kinds):
        return True  # strings, numbers, dicts: one per sample
    if all(k == _SEQ for k in kinds):
        inner = [_item_kinds(v) for v in items]
        if any(len(k) > 1 for k in inner):
            return True  # records such as (image, label): the collate kept the samples
        if len({frozenset(k) for k in inner}) == 1 and len(items) > max(len(v) for v in items):
            return True  # N sequences of one kind: the larger of N and their length
    return False


def detect(batch: Any) -> Optional[Strategy]:
    """The strategy for this batch's layout, or None when no size can be told."""
    if _leading_dim(batch) is not None:
        return Strategy((), DIM0)
    if isinstance(batch, Mapping):
        cands: list[_Candidate] = []
        _collect(batch, (), 0, cands)
        best = _choose(cands)
        return Strategy(best.path, best.kind) if best is not None else None
    if not isinstance(batch, (list, tuple)) or not batch:
        return None
    items = batch[:_SCAN]
    if _top_level_is_samples(items):
        return Strategy((), LEN)
    cands = []
    for i, value in enumerate(items):
        _collect(value, (i,), 1, cands)
    best = _choose(cands)
    if best is None:
        return Strategy((), LEN)
    saying = {c.path[0] for c in cands}
    agreeing = {c.path[0] for c in cands if c.count == best.count}
    # Items disagree: samples of different shapes. Two items that disagree are more likely
    # fields (x, side tensor) than a batch of two ragged samples.
    if len(saying) > 2 and 2 * len(agreeing) <= len(saying):
        return Strategy((), LEN)
    return Strategy(best.path, best.kind)


def _apply(batch: Any, path: Path, by_len: bool) -> int:
    obj = batch
    for key in path:
        obj = obj[key]
    if by_len:
        if not isinstance(obj, (list, tuple)):
            raise TypeError("layout changed: expected a list of samples")
        return len(obj)
    return int(obj.shape[0])


class BatchSizer:
    """Callable returning the number of samples in a batch, or 0 when it cannot tell."""

    __slots__ = ("_path", "_by_len", "_type", "_fixed")

    def __init__(self, fixed: Optional[int] = None) -> None:
        self._path: Optional[Path] = None
        self._by_len = False
        self._type: Optional[type] = None
        self._fixed = fixed

    @property
    def strategy(self) -> Optional[Strategy]:
        """The cached strategy, for tests and debugging."""
        if self._path is None:
            return None
        return Strategy(self._path, LEN if self._by_len else DIM0)

    def __call__(self, batch: Any) -> int:
        if self._fixed is not None:
            return self._fixed
        path = self._path
        if path is not None and type(batch) is self._type:
            try:
                return _apply(batch, path, self._by_len)
            except Exception:
                pass
        strategy = detect(batch)
        if strategy is None:
            self._path = None
            return 0
        self._path, self._by_len, self._type = strategy.path, strategy.kind == LEN, type(batch)
        try:
            return _apply(batch, self._path, self._by_len)
        except Exception:
            self._path = None
            return 0
