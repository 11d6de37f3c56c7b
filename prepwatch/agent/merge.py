"""Per-class series summed over the node's ranks before export: classes x splits per node.

Class health exports a series per class and split (1000 classes x 2 splits x ~2.5
families). Served per rank, a run's class series grow with its ranks: 256 ranks of 1000
classes is ~1.3 M series, almost all of them copies that every class rule aggregates away
(``sum``/``avg``/``max by (job, run, split, class)``). The node agent therefore merges
each class family across the ranks it serves, with the reduction the rules apply, and
exports it without ``rank``: a run's class series grow with its nodes, not its ranks
(8x fewer on 8-GPU nodes; measured in docs/distributed.md).

Why the agent and not an all-reduce across ranks at flush: a collective must be entered
by every rank at the same point; class health flushes on its own schedule (every N steps,
at the end of an evaluation that may run on rank 0 only), and a rank missing it would
block the others forever. The agent merges what it already holds, at scrape time.

Every class-health family is merged (accuracy and evaluation rounds too, so that the
rules' joins on ``rank`` still match); the loop, workers and collectives stay per rank.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

import numpy as np

from prepwatch.exporter.snapshot import Family
from prepwatch.exporter.text import _number

Source = tuple[dict[str, str], list[Family]]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


# Every class-health family (prepwatch/checks/class_health/export.py), with the reduction
# alerts/class_health.rules.yml applies across ranks: counts add up, recall and accuracy
# are averaged, evaluation rounds, timestamps and the "rare" flag take the max, the count of
# pooled recent passes the min. All of them
# lose `rank` together: the rules join recall and accuracy with prepwatch_eval_rounds_total
# `on (job, instance, run, rank, split)`, which matches only while both sides agree on rank.
REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "prepwatch_class_samples": sum,
    "prepwatch_class_correct": sum,
    "prepwatch_class_skipped": sum,
    "prepwatch_class_recall_ratio": _mean,
    "prepwatch_class_recall_previous_ratio": _mean,
    "prepwatch_accuracy_ratio": _mean,
    "prepwatch_accuracy_previous_ratio": _mean,
    "prepwatch_eval_rounds": max,
    "prepwatch_eval_last_timestamp_seconds": max,
    "prepwatch_class_rare": max,
    "prepwatch_classes": max,
    # the pooled last passes the rare-class rule compares (counts add up; the rule asks
    # every rank for >= 2 passes, so the node keeps the fewest)
    "prepwatch_class_recent_samples": sum,
    "prepwatch_class_recent_correct": sum,
    "prepwatch_eval_recent_passes": min,
}


class ClassMerger:
    """Merges class families across sources, scrape after scrape. A family whose every
    rank's block is the very one merged at the last scrape (the agent's checker hands back
    the same object for an unchanged block) is not merged again: class health's evaluation
    split changes once per pass, its training split at every flush."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[tuple[str, ...], Family]] = {}

    def collapse(self, sources: Iterable[Source]) -> list[Source]:
        """``sources`` with every class-health family's samples merged across sources.

        Each source is (identity labels, families) as the aggregator holds them; the ranks
        render these families with ``run`` and without ``rank`` (exporter/snapshot.py), so
        lines of one class from every rank are one series. They come back as one extra
        source."""
        sources = list(sources)
        holders = [labels for labels, families in sources if any(f.name in REDUCERS for f in families)]
        if not holders:
            self._last = {}
            return sources
        out: list[Source] = []
        moved: dict[str, list[Family]] = {}
        for labels, families in sources:
            kept: list[Family] = []
            for family in families:
                if family.name not in REDUCERS:
                    kept.append(family)
                    continue
                first = moved.setdefault(family.name, [family])[0]
                if family is not first and family.type != first.type:
                    continue  # a conflicting definition from another rank: keep the first
                if family is not first:
                    moved[family.name].append(family)
            out.append((labels, kept))
        merged, last = [], {}
        for name, group in moved.items():
            blocks = tuple(f.lines for f in group)
            before = self._last.get(name)
            if len(group) == 1:
                result = group[0]
            elif before is not None and len(before[0]) == len(blocks) and \
                    all(a is b for a, b in zip(before[0], blocks)):
                result = before[1]  # the same blocks as last time (identity, not equality)
            else:
                result = _reduced(group)
            last[name] = (blocks, result)
            merged.append(result)
        self._last = last
        out.append(({"run": holders[0].get("run", "")} if len(holders) == 1 else {}, merged))
        return out


_SAMPLE = re.compile(r"(.*\}) (\S+)(?: \S+)?\n")  # label set, value (a timestamp is dropped)
_ARRAY_REDUCERS: dict[Callable[[list[float]], float], Callable[..., np.ndarray]] = {
    sum: np.sum, _mean: np.mean, max: np.max, min: np.min,
}


def _reduced(group: list[Family]) -> Family:
    """One family whose every series is the family's reduction over the group's lines.

    Ranks of one job export the same classes in the same order, so the usual case is a
    column-wise reduction of equal-length value arrays; series that differ between ranks
    fall back to grouping line by line."""
    reduce: Callable[[list[float]], float] = REDUCERS[group[0].name]
    parsed = [tuple(zip(*_SAMPLE.findall(family.lines))) or ((), ()) for family in group]
    keys = parsed[0][0]
    if all(p[0] == keys for p in parsed):
        columns = np.array([p[1] for p in parsed], dtype=np.float64)
        merged = _ARRAY_REDUCERS[reduce](columns, axis=0)
        lines = "".join(f"{key} {_number(v)}\n" for key, v in zip(keys, merged.tolist()))
        return group[0]._replace(lines=lines)
    values: dict[str, list[float]] = {}
    for family_keys, family_values in parsed:
        for key, value in zip(family_keys, family_values):
            held = values.get(key)
            if held is None:
                values[key] = [float(value)]
            else:
                held.append(float(value))
    return group[0]._replace(
        lines="".join(f"{key} {_number(reduce(vals))}\n" for key, vals in values.items())
    )
