"""The agent merges class series across the ranks it serves (prepwatch/agent/merge.py)."""

from __future__ import annotations

import os

import pytest
from helpers import parse, value

from prepwatch.agent import exposition, snapshot_validation
from prepwatch.agent.merge import ClassMerger
from prepwatch.context import Context
from prepwatch.exporter import snapshot
from prepwatch.exporter.text import encode_text
from prepwatch.identity import Identity

torch = pytest.importorskip("torch")


def served(sources) -> bytes:
    """The agent's exposition of ``sources`` (nothing of its own)."""
    return exposition.render(exposition.assemble(sources, []))


def _rank(rank: int, seed: int, classes: int = 5):
    from prepwatch.checks.class_health import ClassHealth

    ctx = Context.create(Identity(run="job", rank=rank))
    health = ClassHealth(ctx, num_classes=classes)
    g = torch.Generator().manual_seed(seed)
    for _ in range(4):
        health.train_predictions(torch.randn(32, classes, generator=g),
                                 torch.randint(0, classes, (32,), generator=g))
    with health.evaluation("eval"):
        health.eval_predictions(torch.randn(40, classes, generator=g),
                                torch.randint(0, classes, (40,), generator=g))
    assert health.flush(30)
    # the wire format the agent receives from a rank, and what the rank's own endpoint serves
    source = snapshot_validation.decode(
        snapshot.encode(ctx.registry, {"run": "job", "rank": rank, "pid": os.getpid()}))
    own = parse(encode_text(ctx.registry, {"run": "job", "rank": str(rank)}).decode())
    health.close()
    return source, own


def _ranks(*specs):
    """(agent sources, the ranks' own endpoints' samples together) for (rank, seed, classes)."""
    made = [_rank(*spec) for spec in specs]
    own: dict = {}
    for _, samples in made:
        own.update(samples)
    return [source for source, _ in made], own


def test_class_series_are_merged_across_ranks_with_the_rules_reductions():
    sources, per_rank = _ranks((0, 0), (1, 1), (2, 2))
    merged = parse(served(ClassMerger().collapse(sources)).decode())

    def names(samples, name):
        return [dict(lab) for (n, lab) in samples if n == name]

    for name in ("prepwatch_class_samples_total", "prepwatch_class_recall_ratio"):
        assert len(names(per_rank, name)) == 3 * len(names(merged, name)) > 0
        assert all("rank" not in lab and lab["run"] == "job" for lab in names(merged, name))
    for split in ("train", "eval"):
        for c in ("0", "3"):
            before = [value(per_rank, "prepwatch_class_samples_total", split=split, rank=str(r),
                            **{"class": c}) for r in range(3)]
            assert value(merged, "prepwatch_class_samples_total", split=split, **{"class": c}) == sum(before)
            recalls = [value(per_rank, "prepwatch_class_recall_ratio", split=split, rank=str(r),
                             **{"class": c}) for r in range(3)]
            got = value(merged, "prepwatch_class_recall_ratio", split=split, **{"class": c})
            assert got == pytest.approx(sum(recalls) / 3)
    # every class-health family loses rank together: the class rules join recall and accuracy
    # with prepwatch_eval_rounds_total on (job, instance, run, rank, split)
    for name in ("prepwatch_accuracy_ratio", "prepwatch_eval_rounds_total", "prepwatch_classes"):
        assert names(merged, name) and all("rank" not in lab for lab in names(merged, name)), name
    accuracy = [value(per_rank, "prepwatch_accuracy_ratio", split="eval", rank=str(r)) for r in range(3)]
    assert value(merged, "prepwatch_accuracy_ratio", split="eval") == pytest.approx(sum(accuracy) / 3)
    assert value(merged, "prepwatch_eval_rounds_total", split="eval") == 1  # max, not 3
    # the loop's families stay per rank
    assert {lab.get("rank") for lab in names(merged, "prepwatch_internal_errors_total")} == {"0", "1", "2"}
    # one HELP/TYPE per family in the merged exposition
    body = served(ClassMerger().collapse(sources)).decode()
    types = [line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))


def test_without_class_series_nothing_changes():
    sources = [({"run": "a", "rank": "0"}, [])]
    assert ClassMerger().collapse(sources) == sources


def test_one_rank_keeps_its_values_and_loses_only_the_rank_label():
    sources, per_rank = _ranks((0, 0))
    merged = parse(served(ClassMerger().collapse(sources)).decode())
    def health(name: str) -> bool:
        return name.startswith(("prepwatch_class", "prepwatch_accuracy", "prepwatch_eval"))

    strip = {(n, tuple((k, v) for k, v in lab if k != "rank")): v for (n, lab), v in per_rank.items()
             if health(n)}
    got = {k: v for k, v in merged.items() if health(k[0])}
    assert got == strip and got


def test_ranks_with_different_series_are_merged_series_by_series():
    """Ranks usually export the same classes in the same order (reduced column-wise); a
    rank with another class count takes the line-by-line path, with the same result."""
    sources, per_rank = _ranks((0, 0, 5), (1, 1, 7))
    merged = parse(served(ClassMerger().collapse(sources)).decode())
    for c in range(7):
        before = [value(per_rank, "prepwatch_class_samples_total", split="train", rank=str(r),
                        **{"class": str(c)}) for r in range(2)]
        got = value(merged, "prepwatch_class_samples_total", split="train", **{"class": str(c)})
        assert got == sum(v for v in before if v is not None)
        assert (c >= 5) == (before[0] is None)


def test_in_process_readers_get_exactly_the_samples_served():
    """The agent's collect() (summary recorder, demo status) reads its assembled lines with
    its own regular expression: the same samples prometheus_client's parser reads."""
    from prometheus_client.parser import text_string_to_metric_families

    ctx = Context.create(Identity(run="job", rank=3))
    g = ctx.registry.gauge("prepwatch_weird", "Escapes.", ["path", "split"])
    g.labels('a "quoted"\\path\nnewline', "x}{,=").set(2.5)
    g.labels("plain", "y").set(float("inf"))
    h = ctx.registry.histogram("prepwatch_h_seconds", "H.", ["stage"], buckets=(0.1, 1.0))
    h.labels("s").observe(0.3)
    sources = [snapshot_validation.decode(snapshot.encode(ctx.registry, {"run": "job", "rank": 3}))]
    sources += _ranks((0, 0), (1, 1))[0]
    families = exposition.assemble(ClassMerger().collapse(sources), [])

    def samples(metrics):
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in metrics for s in m.samples}

    ours = samples(exposition.metrics_of(families))
    reference = samples(text_string_to_metric_families(exposition.render(families).decode()))
    assert ours == reference
    assert ours[("prepwatch_weird", (("path", 'a "quoted"\\path\nnewline'), ("rank", "3"),
                                     ("run", "job"), ("split", "x}{,=")))] == 2.5


def test_every_family_ranks_render_without_rank_has_a_reduction():
    from prepwatch.agent.merge import REDUCERS

    assert REDUCERS.keys() == snapshot.NODE_MERGED


def test_class_health_declares_the_label_names_its_samples_have():
    """Class health declares its families' label names instead of the snapshot reading them
    off every sample (prepwatch/metrics/labels.py); a declaration that a sample does not
    keep would cost the whole rank at the agent. Every path that adds samples is taken:
    classes beyond max_classes (the _other series), rare classes, pooled recent passes,
    the previous pass' recall, skipped targets."""
    from prepwatch.checks.class_health import ClassHealth
    from prepwatch.checks.class_health.export import LABEL_NAMES
    from prepwatch.metrics.labels import DECLARED_LABEL_NAMES

    ctx = Context.create(Identity(run="job", rank=0))
    health = ClassHealth(ctx, num_classes=30, max_classes=10, worst_k=3, rare_classes=[1, 2],
                         ignore_index=-100)
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 30, (64,), generator=g)
    targets[:3] = -100
    for _ in range(3):
        health.train_predictions(torch.randn(64, 30, generator=g), targets)
        with health.evaluation("eval"):
            health.eval_predictions(torch.randn(64, 30, generator=g), targets)
    assert health.flush(30)
    seen = {}
    for metric in health.collect():
        declared = getattr(metric, DECLARED_LABEL_NAMES)
        assert declared == LABEL_NAMES[metric.name]
        for sample in metric.samples:
            assert tuple(sample.labels) in declared, (metric.name, sample)
            seen[metric.name] = seen.get(metric.name, 0) + 1
    health.close()
    assert set(seen) == set(LABEL_NAMES), set(LABEL_NAMES) - set(seen)  # no family left untested
    # and the agent accepts them all, rendered through the declarations
    _identity, families = snapshot_validation.decode(snapshot.encode(ctx.registry, {"run": "job", "rank": 0}))
    assert {f.name for f in families} >= set(LABEL_NAMES)


def test_the_merge_is_redone_for_a_family_one_rank_changed_and_reused_for_the_rest():
    """Scrape after scrape through the agent's per-rank checkers: a class family whose
    blocks are all unchanged keeps last scrape's merge; one rank's new counts are summed in."""
    from prepwatch.agent.merge import ClassMerger
    from prepwatch.checks.class_health import ClassHealth

    healths, registries = [], []
    for rank in range(2):
        ctx = Context.create(Identity(run="job", rank=rank))
        health = ClassHealth(ctx, num_classes=4)
        health.train_predictions(torch.eye(4), torch.arange(4))
        with health.evaluation("eval"):
            health.eval_predictions(torch.eye(4), torch.arange(4))
        assert health.flush(30)
        healths.append(health)
        registries.append(ctx.registry)
    checkers = [snapshot_validation.SnapshotChecker() for _ in registries]
    merger = ClassMerger()

    def scrape():
        sources = [checker.decode([snapshot.encode(reg, {"run": "job", "rank": r})])
                   for r, (checker, reg) in enumerate(zip(checkers, registries))]
        out = merger.collapse(sources)
        return {f.name: f for f in out[-1][1]}, parse(served(out).decode())

    first, _ = scrape()
    again, _ = scrape()
    assert again["prepwatch_class_recall_ratio"] is first["prepwatch_class_recall_ratio"]
    healths[1].train_predictions(torch.eye(4)[[0, 0]], torch.tensor([0, 0]))  # rank 1 trains on
    assert healths[1].flush(30)
    third, merged = scrape()
    assert third["prepwatch_class_samples"] is not first["prepwatch_class_samples"]
    assert value(merged, "prepwatch_class_samples_total", split="train", **{"class": "0"}) == 2 + 2
    assert value(merged, "prepwatch_class_samples_total", split="eval", **{"class": "0"}) == 2
    assert third["prepwatch_class_recall_ratio"] is first["prepwatch_class_recall_ratio"]  # all 1.0
    for health in healths:
        health.close()
