"""Class health: per-class recall on the augmented train stream and on clean evaluation.

Over-augmentation erases the signal of rare and small-object classes while overall
accuracy still improves; only per-class numbers show it. This component counts, per
split and class, samples and correct predictions on the tensors' device (see
class_counts for why there is no host-device sync per step), and exports:

* ``prepwatch_class_samples_total``, ``prepwatch_class_correct_total`` {split, class}
* ``prepwatch_class_recall_ratio`` {split, class}: evaluation splits, over the last
  completed evaluation pass; training splits, over the last ``window_seconds``
* ``prepwatch_class_recall_previous_ratio`` {split, class}: the evaluation pass before
* ``prepwatch_class_recent_samples`` / ``prepwatch_class_recent_correct`` {split, class}
  (rare classes) and ``prepwatch_eval_recent_passes`` {split}: counts pooled over the last
  (up to 4) evaluation passes, which the rare-class alert tests
* ``prepwatch_accuracy_ratio`` / ``prepwatch_accuracy_previous_ratio`` {split}
* ``prepwatch_eval_rounds_total``, ``prepwatch_eval_last_timestamp_seconds`` {split}
* ``prepwatch_class_rare`` {class}: 1 rare, 0 not (omitted until decided)
* ``prepwatch_class_skipped_total`` {split, reason=ignored|out_of_range}
* ``prepwatch_classes`` {kind=known|exported}
* ``prepwatch_augmentation_param`` {name}: what ``report_augmentation`` was told

Evaluation passes. ``with ch.evaluation("eval"):`` (or ``begin_eval``/``end_eval``)
marks a pass exactly. Without it, a pass opens at the first ``eval_predictions`` call
and closes when training resumes (the next ``train_predictions`` call), when an
``eval_predictions`` call comes more than ``eval_gap_seconds`` after the previous one
(a new pass), or at ``close()``.

Errors. The first call for each split checks everything (types, shapes, device, class
count; on CPU also the target values) and raises ValueError/TypeError with the fix:
that call is where a wiring mistake shows. After that, nothing raises into the training
loop: a bad batch is skipped and counted in ``prepwatch_internal_errors_total
{component="class_health"}``; out-of-range targets are counted in
``prepwatch_class_skipped_total{reason="out_of_range"}``.

One training thread feeds a ClassHealth; scrapes come from another thread and only
read host copies under a lock that the training thread takes at flushes, not per step.
"""

from __future__ import annotations

import logging
import numbers
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from prepwatch.checks.class_health.counts import DeviceCounts, Pending, drain, to_indices
from prepwatch.checks.class_health.export import Renderer, Selection, SplitView, View
from prepwatch.checks.class_health.rare import RareRule
from prepwatch.checks.class_health.stats import SplitStats
from prepwatch.context import Context
from prepwatch.metrics.labels import sanitize_label_value

log = logging.getLogger("prepwatch")
COMPONENT = "class_health"
MAX_AUGMENTATION_PARAMS = 64
ClassRef = Union[int, str]


def _positive(name: str, value: Any, kind: type = int, allow_zero: bool = False) -> Any:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and kind is int:
        ok = float(value).is_integer()
    if not ok or (value < 0 if allow_zero else value <= 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")
    return kind(value)


class ClassHealth:
    """Per-class counts and recall; created by ``watch.class_health(**options)``.

    Options (all keyword): ``num_classes`` (inferred from the logits' class dimension on
    first use when omitted), ``class_names`` (sequence or {index: name}; sanitized),
    ``ignore_index`` (targets to skip, like CrossEntropyLoss' -100), ``rare_classes``
    (indices or names that are rare whatever their frequency), ``rare_share`` (0.5: rare
    below half the uniform share; None turns the frequency rule off), ``rare_quantile``
    (instead of rare_share), ``rare_min_samples`` (training labels before deciding;
    default 50 x num_classes), ``max_classes`` (own series, 1000), ``worst_k`` (kept when
    beyond max_classes, 20), ``flush_every_steps`` (50), ``flush_every_seconds`` (10),
    ``window_seconds`` (training-split recall window, 300), ``eval_gap_seconds`` (60).
    """

    def __init__(
        self,
        ctx: Context,
        *,
        num_classes: Optional[int] = None,
        class_names: Union[Sequence[str], Mapping[int, str], None] = None,
        ignore_index: Optional[int] = None,
        rare_classes: Optional[Sequence[ClassRef]] = None,
        rare_share: Optional[float] = 0.5,
        rare_quantile: Optional[float] = None,
        rare_min_samples: Optional[int] = None,
        max_classes: int = 1000,
        worst_k: int = 20,
        flush_every_steps: int = 50,
        flush_every_seconds: float = 10.0,
        window_seconds: float = 300.0,
        eval_gap_seconds: float = 60.0,
    ) -> None:
        self._ctx = ctx
        self._survive = ctx.errors.survive(COMPONENT)
        self._max_classes = _positive("max_classes", max_classes)
        self._worst_k = _positive("worst_k", worst_k, allow_zero=True)
        self._flush_steps = _positive("flush_every_steps", flush_every_steps)
        self._flush_seconds = _positive("flush_every_seconds", flush_every_seconds, float)
        self._window = _positive("window_seconds", window_seconds, float)
        self._gap = _positive("eval_gap_seconds", eval_gap_seconds, float)
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise ValueError(f"ignore_index must be an int (e.g. -100) or None, got {ignore_index!r}")
        if rare_min_samples is not None:
            rare_min_samples = _positive("rare_min_samples", rare_min_samples, allow_zero=True)
        if rare_share is not None and rare_quantile is not None:
            raise ValueError(
                "pass rare_share or rare_quantile, not both (rare_share=None to use the quantile)")
        if rare_classes is not None and (
                isinstance(rare_classes, (str, bytes)) or not isinstance(rare_classes, Sequence)):
            raise TypeError(
                f"rare_classes must be a list of class indices or names, got {rare_classes!r}")
        if class_names is not None and (isinstance(class_names, (str, bytes))
                                        or not isinstance(class_names, (Sequence, Mapping))):
            raise TypeError("class_names must be a sequence of names or a {index: name} mapping")
        self._ignore = ignore_index
        self._class_names = class_names
        self._rare_options = (rare_share, rare_quantile, rare_min_samples)
        self._rare_classes = list(rare_classes) if rare_classes is not None else []
        # RareRule validates its numbers; do it now, not at the first batch.
        RareRule(1, share=rare_share if rare_quantile is None else None, quantile=rare_quantile)

        self._lock = threading.Lock()
        self._pending: deque = deque()
        self._stream: dict[str, DeviceCounts] = {}
        self._passes_counts: dict[str, DeviceCounts] = {}
        self._stats: dict[str, SplitStats] = {}
        self._open: dict[str, str] = {}  # split -> "explicit" | "implicit"
        self._last_eval: dict[str, float] = {}
        self._implicit_open = False
        self._warned_range = False
        self._renderer = Renderer()
        self._aug_family = ctx.registry.gauge(
            "prepwatch_augmentation_param",
            "Augmentation settings as the training job reported them (report_augmentation).",
            ["name"],
        )
        self._aug_children: dict[str, Any] = {}
        self.num_classes: Optional[int] = None
        self.class_names: list[str] = []
        self._rare: Optional[RareRule] = None
        self._selection: Optional[Selection] = None
        if num_classes is not None:
            self._resolve(_positive("num_classes", num_classes))
        ctx.errors.precreate(COMPONENT)
        ctx.registry.register(self, COMPONENT)

    # -- set-up -----------------------------------------------------------------------------
    def _resolve(self, num_classes: int) -> None:
        """Fix the class count: names, rare rule and the cardinality guard follow from it."""
        names = self._names_for(num_classes)
        explicit = frozenset(self._class_index(ref, names, num_classes) for ref in self._rare_classes)
        share, quantile, min_samples = self._rare_options
        rare = RareRule(num_classes, explicit, share=share if quantile is None else None,
                        quantile=quantile, min_samples=min_samples)
        selection = Selection(num_classes, self._max_classes, self._worst_k)
        with self._lock:
            self.num_classes = num_classes
            self.class_names = names
            self._rare = rare
            self._selection = selection
            if selection.limited:
                selection.update(rare.flags, None, {})
        if selection.limited:
            log.warning(
                "prepwatch: %d classes is more than max_classes=%d: rare classes and the worst "
                "%d keep their own series, the rest are summed into class=\"_other\". Raise "
                "max_classes in watch.class_health(...) to see every class.",
                num_classes, self._max_classes, self._worst_k,
            )

    def _names_for(self, num_classes: int) -> list[str]:
        given = self._class_names
        if given is None:
            return [str(i) for i in range(num_classes)]
        if isinstance(given, Mapping):
            bad = [k for k in given if not isinstance(k, int) or not 0 <= k < num_classes]
            if bad:
                raise ValueError(
                    f"class_names keys must be class indices in [0, {num_classes}), got {bad[:5]}")
            raw = [str(given.get(i, i)) for i in range(num_classes)]
        else:
            if len(given) != num_classes:
                raise ValueError(
                    f"class_names has {len(given)} names but there are {num_classes} classes; "
                    "pass one name per class (or a {index: name} mapping)")
            raw = [str(n) for n in given]
        names: list[str] = []
        seen: set[str] = {"_other"}
        for i, n in enumerate(raw):
            name = sanitize_label_value(n)
            if name in seen:
                name = sanitize_label_value(f"{name}_{i}")
            seen.add(name)
            names.append(name)
        return names

    def _class_index(self, ref: ClassRef, names: list[str], num_classes: int) -> int:
        if isinstance(ref, bool):
            raise ValueError(f"rare_classes entry {ref!r} is not a class index or name")
        if isinstance(ref, numbers.Integral):
            if not 0 <= int(ref) < num_classes:
                raise ValueError(f"rare_classes entry {ref} is outside [0, {num_classes})")
            return int(ref)
        if isinstance(ref, str):
            raw = self._class_names
            if isinstance(raw, Mapping):
                for k, v in raw.items():
                    if str(v) == ref:
                        return int(k)
            elif raw is not None:
                for i, v in enumerate(raw):
                    if str(v) == ref:
                        return i
            if ref in names:
                return names.index(ref)
            raise ValueError(f"rare_classes entry {ref!r} is not one of the class names")
        raise ValueError(f"rare_classes entry {ref!r} is not a class index or name")

    def _validate_first(self, split: str, predictions: Any, targets: Any) -> int:
        """Everything that can be wrong with the wiring; raises with the fix."""
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string, got {split!r}")
        if sanitize_label_value(split) != split:
            raise ValueError(
                f"split {split!r} is not a clean label value; try {sanitize_label_value(split)!r}")
        for what, x in (("predictions", predictions), ("targets", targets)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
            if x.dtype == torch.bool or x.is_complex():
                raise TypeError(
                    f"{what} have dtype {x.dtype}; pass logits/probabilities (float) or class "
                    "indices (int)")
        if predictions.device != targets.device:
            raise ValueError(
                f"predictions are on {predictions.device} but targets on {targets.device}; "
                "move both to one device (the targets you pass to the loss)")
        known = self.num_classes
        if predictions.dtype.is_floating_point:
            if predictions.dim() < 2:
                raise ValueError(
                    f"float predictions of shape {tuple(predictions.shape)} have no class dimension; "
                    "pass logits or probabilities shaped (N, C, ...), or class indices as an int tensor")
            c = int(predictions.shape[1])
            if known is not None and c != known:
                raise ValueError(f"predictions have {c} classes (dimension 1) but num_classes is {known}")
        else:
            if known is None:
                raise ValueError(
                    "predictions are class indices, so the class count is unknown: pass "
                    "num_classes=... to watch.class_health(...) first (or feed logits)")
            c = known
        if targets.dtype.is_floating_point and (targets.dim() < 2 or int(targets.shape[1]) != c):
            raise ValueError(
                f"float targets of shape {tuple(targets.shape)} are read as soft labels and need "
                f"{c} classes at dimension 1; pass class indices as an int tensor")
        if targets.dtype.is_floating_point and targets.device.type == "cpu" and targets.numel():
            self._check_single_label(targets)
        p, t = to_indices(predictions, targets)  # raises on shape mismatch
        if t.device.type == "cpu" and t.numel():
            self._check_range("targets", t, c, self._ignore)
            if not predictions.dtype.is_floating_point:
                self._check_range("predictions", p, c, None)
        return c

    @staticmethod
    def _check_single_label(targets: torch.Tensor) -> None:
        """Soft labels (mixup, label smoothing) are distributions over classes; multi-hot
        rows are not, and their argmax would count only the lowest-index positive class."""
        sums = targets.float().sum(1)
        low, high = float(sums.min()), float(sums.max())
        if low < 0.5 or high > 1.5:  # lenient: sloppy smoothing still sums to about 1
            raise ValueError(
                f"float targets have class scores summing to {low:g}..{high:g} "
                "per sample, not 1: multi-label (multi-hot) targets? class_health counts "
                "single-label classification (one class per sample or pixel); pass class "
                "indices, or soft labels that are distributions over the classes")

    @staticmethod
    def _check_range(what: str, values: torch.Tensor, c: int, ignore: Optional[int]) -> None:
        v = values.reshape(-1)
        if ignore is not None:
            v = v[v != ignore]
        if not v.numel():
            return
        lo, hi = int(v.min()), int(v.max())
        if lo >= 0 and hi < c:
            return
        bad = lo if lo < 0 else hi
        hint = (f"; if {bad} marks samples to skip, pass ignore_index={bad}"
                if what == "targets" and bad < 0 else "; check num_classes")
        raise ValueError(f"{what} contain class {bad}, outside [0, {c}){hint}")

    def _counts_for(self, split: str, kind: str, predictions: Any, targets: Any) -> DeviceCounts:
        if kind == "stream":
            mine, other = self._stream, self._passes_counts
        else:
            mine, other = self._passes_counts, self._stream
        counts = mine.get(split)
        if counts is not None:
            return counts
        if split in other:
            used = "training" if kind == "pass" else "evaluation"
            raise ValueError(
                f"split {split!r} already receives {used} predictions; give this stream another "
                "split name")
        c = self._validate_first(split, predictions, targets)
        if self.num_classes is None:
            self._resolve(c)
        counts = DeviceCounts(
            split, c, predictions.device, self._ignore, self._deliver, self._enqueue,
            self._flush_steps, self._flush_seconds)
        with self._lock:
            self._stats[split] = SplitStats(split, c, kind, self._window)
        mine[split] = counts
        return counts

    # -- feeding ------------------------------------------------------------------------------
    def train_predictions(self, predictions: Any, targets: Any, *, split: str = "train") -> None:
        """Count a batch of the (augmented) training stream. No device sync.

        ``predictions``: logits or probabilities ``(N, C, ...)`` or class indices shaped
        like ``targets``; ``targets``: class indices (or soft labels shaped like the logits).
        Closes an implicit evaluation pass (training resumed).
        """
        counts = self._stream.get(split)
        if counts is None or self._implicit_open:
            if self._implicit_open:
                self._close_implicit()
            if counts is None:
                counts = self._counts_for(split, "stream", predictions, targets)
        with self._survive:
            counts.add(predictions, targets)

    def eval_predictions(self, predictions: Any, targets: Any, *, split: str = "eval") -> None:
        """Count a batch of clean evaluation data into the current evaluation pass."""
        counts = self._passes_counts.get(split)
        if counts is None:
            counts = self._counts_for(split, "pass", predictions, targets)
        with self._survive:
            now = time.monotonic()
            state = self._open.get(split)
            if state is None:
                self._open[split] = "implicit"
                self._implicit_open = True
            elif state == "implicit" and now - self._last_eval.get(split, now) > self._gap:
                self._close_pass(split)
                self._open[split] = "implicit"
                self._implicit_open = True
            self._last_eval[split] = now
            counts.add(predictions, targets)

    # -- evaluation passes --------------------------------------------------------------------
    def begin_eval(self, split: str = "eval") -> None:
        """Start an evaluation pass of ``split`` (closing one still open)."""
        with self._survive:
            if split in self._open:
                self._close_pass(split)
            self._open[split] = "explicit"

    def end_eval(self, split: str = "eval") -> None:
        """End the evaluation pass of ``split``: its recall becomes the exported one."""
        with self._survive:
            if split in self._open:
                self._close_pass(split)

    @contextmanager
    def evaluation(self, split: str = "eval") -> Iterator[ClassHealth]:
        """``with ch.evaluation("eval"): ...eval_predictions(...)...`` marks one pass."""
        self.begin_eval(split)
        try:
            yield self
        finally:
            self.end_eval(split)

    def _close_pass(self, split: str) -> None:
        self._open.pop(split, None)
        self._implicit_open = any(v == "implicit" for v in self._open.values())
        counts = self._passes_counts.get(split)
        if counts is not None:
            counts.flush(closes_pass=True)

    def _close_implicit(self) -> None:
        try:
            for split in [s for s, v in self._open.items() if v == "implicit"]:
                self._close_pass(split)
        except Exception as exc:
            self._implicit_open = False
            self._ctx.errors.report(COMPONENT, exc)

    # -- augmentation ------------------------------------------------------------------------
    def report_augmentation(self, **params: float) -> None:
        """Export named augmentation settings, e.g. ``crop_scale_min=0.08, cutout_holes=2``.

        Values are Python numbers (a tensor would need a device sync; one is counted under
        ``component="class_health"`` and skipped); call it when a setting changes or once per
        epoch, not necessarily per step.
        """
        for name, value in params.items():
            if isinstance(value, torch.Tensor) or not isinstance(value, numbers.Real):
                # A runtime value (it may be right next epoch): counted and skipped, not raised.
                self._ctx.errors.report(COMPONENT, TypeError(
                    f"report_augmentation({name}=...) needs a Python number, got {type(value).__name__}; "
                    "for a tensor pass float(value) when it changes; not exported"))
                continue
            child = self._aug_children.get(name)
            if child is None:
                if len(self._aug_children) >= MAX_AUGMENTATION_PARAMS:
                    self._ctx.errors.report(COMPONENT, ValueError(
                        f"more than {MAX_AUGMENTATION_PARAMS} augmentation parameter names; "
                        f"{name!r} is not exported"))
                    continue
                child = self._aug_children[name] = self._aug_family.labels(sanitize_label_value(name))
            child.set(float(value))

    # -- host side ---------------------------------------------------------------------------
    def _deliver(self, split: str, samples_bins: np.ndarray, correct_bins: np.ndarray,
                 closes_pass: bool) -> None:
        with self._lock:
            self._deliver_locked(split, samples_bins, correct_bins, closes_pass)

    def _enqueue(self, item: Pending) -> None:
        """A CUDA copy in flight: queue it, fold every copy that already finished."""
        with self._lock:
            self._pending.append(item)
            drain(self._pending, self._deliver_locked)

    def _deliver_locked(self, split: str, samples_bins: np.ndarray, correct_bins: np.ndarray,
                        closes_pass: bool) -> None:
        stats = self._stats[split]
        n, k = stats.add(samples_bins, correct_bins)
        selection, rare = self._selection, self._rare
        assert selection is not None and rare is not None
        selection.on_delta(split, n, k)
        changed = False
        if stats.kind == "stream":
            train = sum(s.samples for s in self._stats.values() if s.kind == "stream")
            changed = rare.update(train)
        if closes_pass:
            changed = stats.close_pass() or changed
        if selection.limited and changed:
            selection.update(rare.flags, self._ranking(), {
                name: (s.samples, s.correct) for name, s in self._stats.items()})
        c = stats.num_classes
        if (samples_bins[0] or samples_bins[c + 1]) and not self._warned_range:
            self._warned_range = True
            log.warning(
                "prepwatch: %s targets outside [0, %d) in split %r were skipped (counted in "
                "prepwatch_class_skipped_total{reason=\"out_of_range\"}); check num_classes "
                "and ignore_index", int(samples_bins[0] + samples_bins[c + 1]), c, split)

    def _ranking(self) -> Optional[np.ndarray]:
        """Recall that decides the worst K: the first evaluation split, else training."""
        for kind in ("pass", "stream"):
            for s in self._stats.values():
                if s.kind == kind and (kind == "stream" or s.rounds):
                    return s.recall
        return None

    def collect(self) -> list:
        """Scrape-time families (prometheus_client collector protocol)."""
        with self._lock:
            drain(self._pending, self._deliver_locked)
            if self.num_classes is None or self._selection is None:
                return []
            sel = self._selection
            view = View(
                names=self.class_names, own=sel.own.copy(), limited=sel.limited,
                rare=self._rare.exported() if self._rare is not None else None,
            )
            for s in self._stats.values():
                view.splits.append(SplitView(
                    name=s.name, kind=s.kind, samples=s.samples.copy(), correct=s.correct.copy(),
                    recall=s.recall, recall_previous=s.recall_previous,
                    basis_samples=s.basis_samples, basis_correct=s.basis_correct,
                    accuracy=s.accuracy, accuracy_previous=s.accuracy_previous, rounds=s.rounds,
                    last_round_timestamp=s.last_round_timestamp, out_of_range=s.out_of_range,
                    ignored=s.ignored,
                    offsets=tuple(a.copy() for a in sel.offsets[s.name]) if s.name in sel.offsets else None,
                    other=tuple(sel.other.get(s.name, (0, 0))),
                    recent_samples=s.recent_samples.copy(), recent_correct=s.recent_correct.copy(),
                    recent_passes=s.recent_passes,
                ))
        return self._renderer.render(view)

    # -- lifecycle and reading -----------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> bool:
        """Bring every count to the host now (waits for the device); passes stay open.

        False when a fault stopped part of it (counted); ``timeout`` is unused: the copies
        are the device's, waited for in order.
        """
        done = True
        for counts in list(self._stream.values()) + list(self._passes_counts.values()):
            try:  # one failing split (a meta or lost device) must not keep the others' counts
                counts.flush()
            except Exception as exc:
                self._ctx.errors.report(COMPONENT, exc)
                done = False
        try:
            with self._lock:
                drain(self._pending, self._deliver_locked, wait=True)
        except Exception as exc:
            self._ctx.errors.report(COMPONENT, exc)
            return False
        return done

    def close(self) -> None:
        """Close open evaluation passes and flush everything. Safe to call twice."""
        for split in list(self._open):
            try:
                self._close_pass(split)
            except Exception as exc:
                self._ctx.errors.report(COMPONENT, exc)
        self.flush()

    def recall(self, split: str) -> dict[str, float]:
        """Last exported recall of ``split`` by class name (classes without samples left out)."""
        with self._lock:
            drain(self._pending, self._deliver_locked)
            s = self._stats.get(split)
            if s is None:
                return {}
            return {n: float(r) for n, r in zip(self.class_names, s.recall) if r == r}

    def accuracy(self, split: str) -> Optional[float]:
        with self._lock:
            drain(self._pending, self._deliver_locked)
            s = self._stats.get(split)
            return None if s is None or s.accuracy != s.accuracy else float(s.accuracy)

    def rounds(self, split: str) -> int:
        with self._lock:
            drain(self._pending, self._deliver_locked)
            s = self._stats.get(split)
            return 0 if s is None else s.rounds

    def rare_classes(self) -> list[str]:
        with self._lock:
            if self._rare is None:
                return []
            return [n for n, f in zip(self.class_names, self._rare.flags) if f]
