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

from typing import Callable, Iterable

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

Source = tuple[dict[str, str], list[Metric]]


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


def collapse_class_series(sources: Iterable[Source]) -> list[Source]:
    """``sources`` with every class-health family's samples merged across sources.

    Each source is (identity labels, metrics) as the aggregator holds them. Merged samples
    keep ``run`` (and every label of their own) and drop ``rank``; they come back as one
    extra source with no identity labels of its own.
    """
    sources = list(sources)
    holders = [labels for labels, metrics in sources if any(m.name in REDUCERS for m in metrics)]
    if not holders:
        return sources
    if len(holders) == 1:  # one rank: nothing to add up; its families move whole, without rank
        return _without_rank(sources)
    out: list[Source] = []
    families: dict[str, Metric] = {}
    groups: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[float]] = {}
    for labels, metrics in sources:
        kept: list[Metric] = []
        run = labels.get("run", "")
        for metric in metrics:
            if metric.name not in REDUCERS:
                kept.append(metric)
                continue
            for s in metric.samples:
                key = (metric.name, s.name, (("run", run), *s.labels.items()))
                values = groups.get(key)
                if values is None:
                    groups[key] = [s.value]
                    if metric.name not in families:
                        families[metric.name] = Metric(
                            metric.name, metric.documentation, metric.type, metric.unit
                        )
                else:
                    values.append(s.value)
        out.append((labels, kept))
    if not groups:
        return out
    for (family, sample_name, label_items), values in groups.items():
        families[family].samples.append(
            Sample(sample_name, dict(label_items), REDUCERS[family](values))
        )
    out.append(({}, list(families.values())))
    return out


def _without_rank(sources: list[Source]) -> list[Source]:
    """The single holder's class families, moved whole into a source labelled only ``run``."""
    out: list[Source] = []
    moved: list[Metric] = []
    run = ""
    for labels, metrics in sources:
        kept = []
        for metric in metrics:
            if metric.name in REDUCERS:
                moved.append(metric)
                run = labels.get("run", "")
            else:
                kept.append(metric)
        out.append((labels, kept))
    out.append(({"run": run}, moved))
    return out
