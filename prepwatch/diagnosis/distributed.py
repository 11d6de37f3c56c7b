"""Where each rank's step goes, and a run's step time against its own past. No I/O.

The figures behind alerts/distributed.rules.yml, computed the way its recording rules do,
so the engine's straggler and regression conditions are the rules' conditions:

- seconds per loop step, per rank: data wait, collective wait (``watch.ddp``) and own
  compute (the rest), each a window's increase of the sum over that of the step count;
- the run's scale (its median rank's step period) and reference ranks: the median rank
  of 3 or more, with exactly 2 the other one (the lower data wait, the higher collective
  wait), because the median of two is their mean, which an outlier pulls halfway. These
  two constants live in the rule file's recording rules, not in an alert expression;
  tests/test_diagnosis_rules.py replays the rule fixtures, so a change there fails it;
- the run's step p50 (the median of its ranks' 10 m p50) now and at each snapshot of an
  earlier baseline window, for the throughput regression.

Windows are passed in (the engine owns them), so this module depends only on series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from prepwatch.diagnosis.series import Window, median

REFERENCE_MEDIAN_MIN_RANKS = 3  # a run's reference rank is its median from 3 ranks on


@dataclass
class StepShare:
    """One rank's seconds per loop step, and its run's scale and reference ranks."""

    run: str
    rank: str
    step: float  # mean step period
    data_wait: float
    collective_wait: float  # NaN without watch.ddp
    own_compute: float  # step - both waits, at least 0; NaN without collective wait
    run_step: float  # the run's median rank's step period
    data_reference: float  # NaN with fewer than 2 ranks
    collective_reference: float
    peer_own_compute: float  # the run's median own compute per step

    @property
    def excess(self) -> float:
        """How much longer this rank waits for data than the reference, as a share of the step."""
        return (self.data_wait - self.data_reference) / self.run_step if self.run_step > 0 else math.nan

    @property
    def deficit(self) -> float:
        """How much less this rank waits in the all-reduce than the reference, as a share."""
        if not self.run_step > 0:
            return math.nan
        return (self.collective_reference - self.collective_wait) / self.run_step


def _reference(values: list[float], pick_of_two: Callable[[list[float]], float]) -> float:
    if len(values) >= REFERENCE_MEDIAN_MIN_RANKS:
        return median(values)
    return pick_of_two(values) if len(values) == 2 else math.nan


def step_shares(w: Window, span: float) -> list[StepShare]:
    """Per rank with steps in the last ``span`` seconds, as run_rank:*:per_step_rate5m."""
    steps = w.increase("prepwatch_step_duration_seconds_count", span=span)
    step_sum = w.increase("prepwatch_step_duration_seconds_sum", span=span)
    data_sum = w.increase("prepwatch_data_wait_seconds_sum", span=span)
    coll_sum = w.increase("prepwatch_collective_wait_seconds_sum", span=span)

    def per_step(totals: dict[tuple[str, ...], float], key: tuple[str, ...]) -> float:
        return totals[key] / steps[key] if key in totals else math.nan

    rows = []
    for key in sorted(k for k, n in steps.items() if n > 0):
        step, data, coll = per_step(step_sum, key), per_step(data_sum, key), per_step(coll_sum, key)
        own = max(step - data - coll, 0.0) if not math.isnan(step - data - coll) else math.nan
        rows.append((key, step, data, coll, own))
    by_run: dict[str, list[tuple]] = {}
    for row in rows:
        by_run.setdefault(row[0][0], []).append(row)
    out = []
    for run, ranks in by_run.items():

        def defined(i: int, ranks: list[tuple] = ranks) -> list[float]:
            return [r[i] for r in ranks if not math.isnan(r[i])]

        run_step = median(defined(1))
        data_ref = _reference(defined(2), min)
        coll_ref = _reference(defined(3), max)
        peer_own = median(defined(4))
        for (_, rank), step, data, coll, own in ranks:
            out.append(StepShare(run, rank, step, data, coll, own, run_step, data_ref, coll_ref, peer_own))
    return out


def run_step_p50(w: Window, span: float) -> dict[str, float]:
    """Per run, the median over its ranks of each rank's step p50 over ``span``
    (run:prepwatch_step_duration_seconds:p50_rate10m); runs without steps are left out."""
    per_run: dict[str, list[float]] = {}
    for (run, _rank), v in w.quantile(0.5, "prepwatch_step_duration_seconds", span=span).items():
        if not math.isnan(v):
            per_run.setdefault(run, []).append(v)
    return {run: median(vs) for run, vs in per_run.items()}


def quantile(q: float, values: list[float]) -> float:
    """Prometheus' quantile (and quantile_over_time): linear between the closest ranks."""
    xs = sorted(values)
    if not xs:
        return math.nan
    rank = q * (len(xs) - 1)
    lo = int(math.floor(rank))
    hi = min(lo + 1, len(xs) - 1)
    weight = rank - lo
    return xs[lo] * (1 - weight) + xs[hi] * weight


@dataclass
class Regression:
    """A run's step p50 now against its own baseline window."""

    run: str
    now: float
    baseline: float  # median of the baseline window's p50s
    spread: float  # their interquartile range

    @property
    def ratio(self) -> float:
        return self.now / self.baseline if self.baseline > 0 else math.nan


def regressions(
    w: Window, span: float, baseline_s: float, offset_s: float, history_s: float
) -> list[Regression]:
    """Per run with a step p50 ``history_s`` ago: the p50 now and its median and IQR over the
    baseline window ``[now - offset_s - baseline_s, now - offset_s]``, as the rule's
    quantile_over_time(...[baseline] offset ...) reads the recorded p50 at each evaluation.
    The engine's snapshots stand for the rule's evaluations (at top/summary/report spacing);
    a window without steps has no p50 and is left out of the baseline."""
    t = w.last.t
    snaps = w.snapshots
    # the run had a p50 history_s ago (the baseline window is full): at the last snapshot
    # by then, with one before it so that it covers an interval. Prometheus also wants that
    # sample within its 5 m lookback; sparse windows (a long run's thinned summary) are not
    # held to it.
    old = [i for i, s in enumerate(snaps) if s.t <= t - history_s + 1e-6]
    if not old or old[-1] < 1:
        return []

    def p50_at(i: int) -> dict[str, float]:
        return run_step_p50(Window(snaps[: i + 1], start=w.start), span)

    existed = p50_at(old[-1])
    now = run_step_p50(w, span)
    base: dict[str, list[float]] = {}
    for i, s in enumerate(snaps):
        if t - offset_s - baseline_s - 1e-6 <= s.t <= t - offset_s + 1e-6:
            for run, v in p50_at(i).items():
                base.setdefault(run, []).append(v)
    out = []
    for run, v in now.items():
        if run not in existed or not base.get(run):
            continue
        b = base[run]
        out.append(Regression(run, v, quantile(0.5, b), quantile(0.75, b) - quantile(0.25, b)))
    return out
