"""Per-class series at scrape time, with a cardinality guard.

Up to ``max_classes`` classes get their own ``class`` label value. Beyond it, the worst
``worst_k`` (lowest recall) and rare classes get theirs and the rest are summed into
``class="_other"``. ``worst_k`` slots are kept for the worst, so a long tail of rare
classes cannot crowd them out, and rare classes are promoted rarest first (fewest samples
counted), not in index order: with more rare classes than room, the series go to those
augmentation is most likely to erase. A class that got its own series keeps it (a series that comes
and goes breaks ``rate()``), and its counters start from zero at promotion while
``_other`` keeps what it had counted for it, so every counter stays monotonic and a
``sum()`` over classes stays exact.

The families are built directly from numpy arrays with shared label dicts: a scrape of
1000 classes x 2 splits is ~8000 samples, and ``add_metric`` per sample would spend most
of the 50 ms budget on dict building.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from prepwatch.metrics.labels import declare_label_names

OTHER = "_other"

# name (without _total for counters) -> (type, help)
FAMILIES = {
    "prepwatch_class_samples": ("counter", "Samples counted per class (the target class), by split."),
    "prepwatch_class_correct": ("counter", "Samples whose predicted class is the target class, by split."),
    "prepwatch_class_recall_ratio": (
        "gauge", "Recall per class: over the last completed evaluation pass for evaluation splits, "
        "over the last window_seconds for training splits."),
    "prepwatch_class_recall_previous_ratio": (
        "gauge", "Recall of each rare class in the evaluation pass before the last one."),
    "prepwatch_accuracy_ratio": ("gauge", "Overall accuracy, on the basis of prepwatch_class_recall_ratio."),
    "prepwatch_accuracy_previous_ratio": (
        "gauge", "Overall accuracy in the evaluation pass before the last one."),
    "prepwatch_class_recent_samples": (
        "gauge", "Samples of each rare class over the last prepwatch_eval_recent_passes "
        "evaluation passes (pooled), by split."),
    "prepwatch_class_recent_correct": (
        "gauge", "Correct predictions of each rare class over the last "
        "prepwatch_eval_recent_passes evaluation passes (pooled), by split."),
    "prepwatch_eval_recent_passes": (
        "gauge", "Evaluation passes pooled in prepwatch_class_recent_* (half the passes of the "
        "last 6 h, 2 to 4; fewer until that many completed), by split."),
    "prepwatch_eval_rounds": ("counter", "Completed evaluation passes, by split."),
    "prepwatch_eval_last_timestamp_seconds": ("gauge", "Unix time the last evaluation pass completed."),
    "prepwatch_class_skipped": (
        "counter", "Targets not counted, by reason: ignored (ignore_index) or out_of_range."),
    "prepwatch_class_rare": (
        "gauge", "1 for a rare class (from the training label frequency, or named), 0 otherwise."),
    "prepwatch_classes": (
        "gauge", "Number of classes: known (num_classes) and exported (with their own series)."),
}

_CLASS, _SPLIT = ("split", "class"), ("split",)
# The label names of every sample of each family, declared so that the node agent's
# snapshot need not read them off ~5,000 samples per scrape (exporter/text.py).
LABEL_NAMES: dict[str, tuple[tuple[str, ...], ...]] = {
    "prepwatch_class_samples": (_CLASS,), "prepwatch_class_correct": (_CLASS,),
    "prepwatch_class_recall_ratio": (_CLASS,), "prepwatch_class_recall_previous_ratio": (_CLASS,),
    "prepwatch_class_recent_samples": (_CLASS,), "prepwatch_class_recent_correct": (_CLASS,),
    "prepwatch_accuracy_ratio": (_SPLIT,), "prepwatch_accuracy_previous_ratio": (_SPLIT,),
    "prepwatch_eval_recent_passes": (_SPLIT,), "prepwatch_eval_rounds": (_SPLIT,),
    "prepwatch_eval_last_timestamp_seconds": (_SPLIT,),
    "prepwatch_class_skipped": (("split", "reason"),), "prepwatch_class_rare": (("class",),),
    "prepwatch_classes": (("kind",),),
}


class Selection:
    """Which classes have their own series; counts aggregated for the rest."""

    def __init__(self, num_classes: int, max_classes: int, worst_k: int) -> None:
        self.num_classes = num_classes
        self.max_classes = max_classes
        self.worst_k = worst_k
        self.limited = num_classes > max_classes
        self.own = np.ones(num_classes, dtype=bool) if not self.limited else np.zeros(num_classes, dtype=bool)
        self.offsets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.other: dict[str, list[int]] = {}

    def on_delta(self, split: str, samples: np.ndarray, correct: np.ndarray) -> None:
        if not self.limited:
            return
        rest = ~self.own
        acc = self.other.setdefault(split, [0, 0])
        acc[0] += int(samples[rest].sum())
        acc[1] += int(correct[rest].sum())

    def update(self, rare: np.ndarray, ranking: Optional[np.ndarray],
               totals: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Promote the worst K by ``ranking`` (recall), then rare classes rarest first, up to
        the cap; rare classes leave ``worst_k`` slots to the worst."""
        if not self.limited:
            return
        worst: np.ndarray = np.zeros(0, dtype=np.int64)
        if ranking is not None and self.worst_k > 0:
            known = np.flatnonzero(~np.isnan(ranking))
            worst = known[np.argsort(ranking[known], kind="stable")[: self.worst_k]]
        rare_idx = np.flatnonzero(rare)
        if rare_idx.size and totals:
            seen = sum(samples for samples, _ in totals.values())
            rare_idx = rare_idx[np.argsort(seen[rare_idx], kind="stable")]
        owned = int(self.own.sum())
        for order, cap in ((worst, self.max_classes), (rare_idx, self.max_classes - self.worst_k)):
            for c in order:
                if owned >= cap:
                    break
                if not self.own[c]:
                    self._promote(int(c), totals)
                    owned += 1

    def _promote(self, c: int, totals: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.own[c] = True
        for split, (samples, correct) in totals.items():
            off_n, off_k = self.offsets.setdefault(
                split, (np.zeros(self.num_classes, np.int64), np.zeros(self.num_classes, np.int64)))
            off_n[c] = samples[c]
            off_k[c] = correct[c]


@dataclass
class SplitView:
    """A copy of one split's numbers, taken under the owner's lock."""

    name: str
    kind: str
    samples: np.ndarray
    correct: np.ndarray
    recall: np.ndarray
    recall_previous: np.ndarray
    basis_samples: np.ndarray
    basis_correct: np.ndarray
    accuracy: float
    accuracy_previous: float
    rounds: int
    last_round_timestamp: float
    out_of_range: int
    ignored: int
    offsets: Optional[tuple[np.ndarray, np.ndarray]] = None
    other: tuple[int, int] = (0, 0)
    recent_samples: Optional[np.ndarray] = None
    recent_correct: Optional[np.ndarray] = None
    recent_passes: int = 0


@dataclass
class View:
    names: list[str]
    own: np.ndarray
    limited: bool
    rare: Optional[np.ndarray]
    splits: list[SplitView] = field(default_factory=list)


class Renderer:
    """Builds the metric families; caches label dicts (never mutated downstream)."""

    def __init__(self) -> None:
        self._labels: dict[tuple[str, str], dict[str, str]] = {}
        self._class_labels: dict[str, dict[str, str]] = {}

    def _pair(self, split: str, cls: str) -> dict[str, str]:
        key = (split, cls)
        d = self._labels.get(key)
        if d is None:
            d = self._labels[key] = {"split": split, "class": cls}
        return d

    def render(self, view: View) -> list[Metric]:
        m = {name: declare_label_names(Metric(name, doc, kind), LABEL_NAMES[name])
             for name, (kind, doc) in FAMILIES.items()}
        samples_m, correct_m = m["prepwatch_class_samples"], m["prepwatch_class_correct"]
        recall_m, prev_m = m["prepwatch_class_recall_ratio"], m["prepwatch_class_recall_previous_ratio"]
        own_idx = np.flatnonzero(view.own)
        own_names = [view.names[i] for i in own_idx]
        rest = ~view.own
        for s in view.splits:
            add_n = samples_m.samples.append
            add_k = correct_m.samples.append
            add_r = recall_m.samples.append
            n = s.samples[own_idx]
            k = s.correct[own_idx]
            if s.offsets is not None:
                n = n - s.offsets[0][own_idx]
                k = k - s.offsets[1][own_idx]
            rec = s.recall[own_idx]
            for name, nv, kv, rv in zip(own_names, n.tolist(), k.tolist(), rec.tolist()):
                labels = self._pair(s.name, name)
                add_n(Sample("prepwatch_class_samples_total", labels, nv))
                add_k(Sample("prepwatch_class_correct_total", labels, kv))
                if rv == rv:
                    add_r(Sample("prepwatch_class_recall_ratio", labels, rv))
            if (s.kind == "pass" and s.recent_passes and view.rare is not None
                    and s.recent_samples is not None and s.recent_correct is not None):
                # rare classes only, as below: the pooled counts the rare-class alert tests
                rare_idx = np.flatnonzero(view.own & (view.rare == 1))
                rs_m, rc_m = m["prepwatch_class_recent_samples"], m["prepwatch_class_recent_correct"]
                for i, nv, kv in zip(rare_idx.tolist(), s.recent_samples[rare_idx].tolist(),
                                     s.recent_correct[rare_idx].tolist()):
                    labels = self._pair(s.name, view.names[i])
                    rs_m.samples.append(Sample("prepwatch_class_recent_samples", labels, float(nv)))
                    rc_m.samples.append(Sample("prepwatch_class_recent_correct", labels, float(kv)))
                m["prepwatch_eval_recent_passes"].samples.append(Sample(
                    "prepwatch_eval_recent_passes", {"split": s.name}, float(s.recent_passes)))
            if s.kind == "pass" and s.rounds >= 2 and view.rare is not None:
                # rare classes only: the over-augmentation alert needs them, and 1000 more
                # lines per scrape for the rest would cost ~5 ms for nothing
                rare_idx = np.flatnonzero(view.own & (view.rare == 1))
                for i, rv in zip(rare_idx.tolist(), s.recall_previous[rare_idx].tolist()):
                    if rv == rv:
                        prev_m.samples.append(Sample(
                            "prepwatch_class_recall_previous_ratio", self._pair(s.name, view.names[i]), rv))
            if view.limited:
                labels = self._pair(s.name, OTHER)
                add_n(Sample("prepwatch_class_samples_total", labels, float(s.other[0])))
                add_k(Sample("prepwatch_class_correct_total", labels, float(s.other[1])))
                basis = int(s.basis_samples[rest].sum())
                if basis:
                    hits = float(s.basis_correct[rest].sum())
                    add_r(Sample("prepwatch_class_recall_ratio", labels, hits / basis))
            self._split_samples(m, s)
        out = list(m.values())
        if view.rare is None:
            out.remove(m["prepwatch_class_rare"])
        else:
            rare_m = m["prepwatch_class_rare"]
            for name, v in zip(own_names, view.rare[own_idx].tolist()):
                if v == v:
                    rare_m.samples.append(Sample("prepwatch_class_rare", self._class(name), v))
        classes = m["prepwatch_classes"].samples
        classes.append(Sample("prepwatch_classes", {"kind": "known"}, float(len(view.names))))
        classes.append(Sample("prepwatch_classes", {"kind": "exported"}, float(len(own_idx))))
        return out

    @staticmethod
    def _split_samples(m: dict[str, Metric], s: SplitView) -> None:
        """Per-split series: accuracy, evaluation rounds, skipped targets."""
        labels = {"split": s.name}
        if not math.isnan(s.accuracy):
            m["prepwatch_accuracy_ratio"].samples.append(
                Sample("prepwatch_accuracy_ratio", labels, s.accuracy))
        if s.kind == "pass":
            if not math.isnan(s.accuracy_previous):
                m["prepwatch_accuracy_previous_ratio"].samples.append(
                    Sample("prepwatch_accuracy_previous_ratio", labels, s.accuracy_previous))
            m["prepwatch_eval_rounds"].samples.append(
                Sample("prepwatch_eval_rounds_total", labels, float(s.rounds)))
            if not math.isnan(s.last_round_timestamp):
                m["prepwatch_eval_last_timestamp_seconds"].samples.append(
                    Sample("prepwatch_eval_last_timestamp_seconds", labels, s.last_round_timestamp))
        skipped = m["prepwatch_class_skipped"].samples
        for reason, count in (("ignored", s.ignored), ("out_of_range", s.out_of_range)):
            skipped.append(Sample("prepwatch_class_skipped_total", {"split": s.name, "reason": reason},
                                  float(count)))

    def _class(self, name: str) -> dict[str, str]:
        d = self._class_labels.get(name)
        if d is None:
            d = self._class_labels[name] = {"class": name}
        return d
