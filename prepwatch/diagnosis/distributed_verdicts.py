"""Findings for synchronous data-parallel runs: which rank holds the others up, and why;
and a run that became slower than its own steady state."""

from __future__ import annotations

import math

from prepwatch.diagnosis.distributed import Regression, StepShare, step_shares
from prepwatch.diagnosis.engine import RATE, Condition, run_regressions
from prepwatch.diagnosis.findings import Evidence, Finding, format_value
from prepwatch.diagnosis.series import Window
from prepwatch.diagnosis.thresholds import Thresholds


def distributed_findings(w: Window, conds: list[Condition], th: Thresholds) -> list[Finding]:
    mine = [c for c in conds if c.alert in ALERTS]
    if not mine:
        return []
    shares = {(s.run, s.rank): s for s in step_shares(w, RATE)}
    regressed: dict[str, Regression] = {}
    if any(c.alert == "PrepwatchThroughputRegression" for c in mine):
        regressed = {g.run: g for g in run_regressions(w, th)}
    out = []
    for c in mine:
        if c.alert == "PrepwatchThroughputRegression":
            g = regressed.get(c.labels["run"])
            if g is not None:
                out.append(_regression(g, c, th))
            continue
        share = shares.get((c.labels.get("run", ""), c.labels.get("rank", "")))
        if share is None:
            continue
        if c.alert == "PrepwatchInputStragglerRank":
            out.append(_input_straggler(share, c))
        elif c.alert == "PrepwatchComputeStragglerRank":
            out.append(_compute_straggler(share, c))
    return out


ALERTS = ("PrepwatchInputStragglerRank", "PrepwatchComputeStragglerRank", "PrepwatchThroughputRegression")


def _per_step(s: StepShare) -> list[Evidence]:
    ev = [Evidence("run's step period (median rank)", s.run_step, "s")]
    for what, v in (
        ("data wait per step", s.data_wait),
        ("collective wait per step", s.collective_wait),
        ("own compute per step", s.own_compute),
    ):
        if not math.isnan(v):
            ev.append(Evidence(what, v, "s"))
    return ev


def _input_straggler(s: StepShare, c: Condition) -> Finding:
    return Finding(
        "straggler.input",
        "warning",
        f"Rank {s.rank} is the run's input straggler: it waits for data {format_value(c.value, '%')} "
        f"of the step longer than the reference rank, and every rank waits for it.",
        [
            Evidence("extra data wait, share of the step", c.value, "%"),
            Evidence("reference rank's data wait per step", s.data_reference, "s"),
            *_per_step(s),
        ],
        [
            "a busier or smaller node (fewer CPU cores for its workers)",
            "a slower storage path or a cold cache on its node",
            "a shard of heavier samples",
            "fewer DataLoader workers on this rank",
        ],
        "Compare this rank's worker fetch time per stage, worker CPU and file open latency with "
        "a peer's, and give it what the peer has (cores, workers, local data).",
        dict(c.labels),
        [c.alert],
        score=c.value,
    )


def _compute_straggler(s: StepShare, c: Condition) -> Finding:
    return Finding(
        "straggler.compute",
        "warning",
        f"Rank {s.rank} holds up the run with its own work: it waits in the all-reduce "
        f"{format_value(c.value, '%')} of the step less than the reference rank while its peers "
        f"wait for it.",
        [
            Evidence("missing collective wait, share of the step", c.value, "%"),
            Evidence("reference rank's collective wait per step", s.collective_reference, "s"),
            Evidence("peers' own compute per step (median)", s.peer_own_compute, "s"),
            *_per_step(s),
        ],
        [
            "a throttled or slower GPU",
            "extra work on this rank (logging, checkpointing, evaluation on rank 0)",
            "CPU contention on its node",
            "an uneven split of the work",
        ],
        "Compare this rank's GPU busy share and clocks with a peer's, and move rank-only work "
        "(logging, checkpoints, evaluation) out of the step or spread it over every rank.",
        dict(c.labels),
        [c.alert],
        score=c.value,
    )


def _regression(g: Regression, c: Condition, th: Thresholds) -> Finding:
    return Finding(
        "throughput_regression",
        "warning",
        f"Run {g.run} slowed down: its median step is {c.value:.1f}x its own median of the "
        f"{th.regression_baseline_h:g} h that ended {th.regression_offset_m:g} minutes before, "
        f"beyond that baseline's noise.",
        [
            Evidence("step p50 now (median rank)", g.now, "s"),
            Evidence("step p50 over the baseline (median)", g.baseline, "s"),
            Evidence("baseline spread (interquartile range)", g.spread, "s"),
            Evidence("now / baseline", c.value, "x"),
        ],
        [
            "a straggling rank (see the straggler findings)",
            "a node or GPU throttled",
            "a shared filesystem or network under load",
            "a code or data change (longer sequences, larger images) after a restart",
        ],
        "See where each rank's step goes now (data wait, collective wait, own compute) and what "
        "changed when the slowdown began.",
        dict(c.labels),
        [c.alert],
        score=c.value,
    )
