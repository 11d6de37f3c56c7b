"""Power and false alarms of the rare-class recall-drop test, and the choice of test.

    python bench/sim_rare_class_alert.py            # full grid (a few minutes on 1 core)
    python bench/sim_rare_class_alert.py --quick    # a reduced grid (seconds; tests use it)

Binomial model of one rare class' clean-evaluation recall per pass (``n`` images of the
class per pass), with the alert's own arithmetic. Healthy: recall 0.70 improving to 0.72
over 24 h. Fall: 0.70 for 6 h, then ``0.70 - drop`` for 12 h. Cadence: evaluation passes
per 6 h. Three tests, each turned into "drop > 10 points and drop > (sqrt(2 ln m) + c)
se" (m: the number of comparisons the best was picked from in the 6 h window):

* ``best pass vs better of last 2`` (the rule until issue 14): best single pass in 6 h
  against the better of the last two passes, se of one pass.
* ``pooled last L vs best pooled L`` (L = 2, 3, 4, or adaptive: half the passes of the
  6 h window, 2 to 4): recall pooled over the last L passes
  (sum of correct / sum of samples, as the rule computes it from
  ``prepwatch_class_recent_*``) against the best such pooled recall in 6 h; se of the
  difference of two L-pass pools, m = k / L.

For each test the constant ``c`` is set so that the worst cell of the grid (over n and
cadence) stays at the false-alarm target (``FA_TARGET``: the share of healthy rare classes
that fire at least once in 24 h), then detection within 12 h of the fall is compared at
that same false-alarm rate. The test with the best mean detection is what
alerts/class_health.rules.yml uses; docs/class_health.md has the table this prints.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

FA_TARGET = 0.01  # healthy rare classes firing at least once per day
MIN_DROP = 0.10
P0 = 0.70


@dataclass(frozen=True)
class Test:
    name: str
    pool: int  # L: passes pooled for "current" and for each candidate "best"
    single_best: bool  # the old rule: best single pass vs better of the last two


TESTS = (
    Test("best pass vs better of last 2", 1, True),
    Test("pooled last 2 vs best pooled 2", 2, False),
    Test("pooled last 3 vs best pooled 3", 3, False),
    Test("pooled last 4 vs best pooled 4", 4, False),
    Test("pooled last L vs best pooled L, L = clamp(k/2, 2, 4)", 0, False),
)


def pool_size(test: Test, per_6h: int) -> int:
    """L of a test; 0 = adaptive: half the passes of the 6 h window, 2 to 4 (what
    prepwatch.checks.class_health.stats.recent_pool computes from pass timestamps)."""
    return test.pool if test.pool else int(min(4, max(2, per_6h // 2)))


def excess(recall: np.ndarray, n: int, per_6h: int, test: Test, start: int) -> np.ndarray:
    """Per class, the max over passes >= start of drop/se - sqrt(2 ln m) where drop > 10 pts.

    A class fires at threshold c exactly when this is > c (so c can be calibrated once).
    """
    classes, passes = recall.shape
    out = np.full(classes, -np.inf)
    L = pool_size(test, per_6h)
    if test.single_best:
        current = np.maximum(recall[:, 1:], recall[:, :-1])  # index i-1 -> passes i-1, i
        current = np.concatenate([np.full((classes, 1), np.nan), current], axis=1)
        series, n_eff, cur = recall, n, current
    else:
        pooled = sliding_window_view(recall, L, axis=1).mean(-1)  # index j: passes j..j+L-1
        pooled = np.concatenate([np.full((classes, L - 1), np.nan), pooled], axis=1)
        series, n_eff, cur = pooled, n * L, pooled
    padded = np.concatenate([np.full((classes, per_6h - 1), -np.inf), np.nan_to_num(series, nan=-np.inf)], 1)
    best = sliding_window_view(padded, per_6h, axis=1).max(-1)  # best in the last k passes
    for i in range(max(start, L, 1), passes):
        k = min(i + 1, per_6h)
        m = max(k / L if not test.single_best else k, 2.0)
        b, c = best[:, i], cur[:, i]
        mean = np.clip((b + c) / 2, 1e-6, 1 - 1e-6)
        se = np.sqrt(mean * (1 - mean) * (1 / n if test.single_best else 2 / n_eff))
        drop = b - c
        stat = np.where(drop > MIN_DROP, drop / se - np.sqrt(2 * np.log(m)), -np.inf)
        out = np.maximum(out, stat)
    return np.maximum(out, -1e9)  # never fired: a finite "very low" keeps quantiles defined


def run(tests=TESTS, ns=(20, 50, 100, 200, 500), drops=(0.05, 0.10, 0.20, 0.40),
        cadences=(2, 6, 24, 72), classes=2000, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    healthy: dict = {}
    fall: dict = {}
    for n in ns:
        for per_6h in cadences:
            passes = 4 * per_6h
            p = np.linspace(P0, P0 + 0.02, passes)
            rec = rng.binomial(n, p, size=(classes, passes)) / n
            for t in tests:
                healthy[(t.name, n, per_6h)] = excess(rec, n, per_6h, t, 0)
            for d in drops:
                onset, passes = per_6h, 3 * per_6h  # 6 h before, 12 h after
                p = np.where(np.arange(passes) < onset, P0, P0 - d)
                rec = rng.binomial(n, p, size=(classes, passes)) / n
                for t in tests:
                    fall[(t.name, n, per_6h, d)] = excess(rec, n, per_6h, t, onset)
    thresholds = {}
    for t in tests:
        # c such that the worst (n, cadence) cell fires on FA_TARGET of healthy classes
        worst = max(np.quantile(healthy[(t.name, n, k)], 1 - FA_TARGET) for n in ns for k in cadences)
        thresholds[t.name] = float(max(worst, 0.0))
    fa = {key: float((v > thresholds[key[0]]).mean()) for key, v in healthy.items()}
    power = {key: float((v > thresholds[key[0]]).mean()) for key, v in fall.items()}
    return {"thresholds": thresholds, "fa": fa, "power": power, "ns": ns, "drops": drops,
            "cadences": cadences, "tests": [t.name for t in tests]}


def best_test(result: dict) -> str:
    """The test with the highest mean detection over the grid (all at the same FA target)."""
    def mean_power(name: str) -> float:
        return float(np.mean([v for (t, *_), v in result["power"].items() if t == name]))
    return max(result["tests"], key=mean_power)


def report(result: dict) -> str:
    lines = [f"false-alarm target: {FA_TARGET:.0%} of healthy rare classes fire in 24 h "
             "(worst cell of the grid)"]
    for name in result["tests"]:
        mean = np.mean([v for (t, *_), v in result["power"].items() if t == name])
        worst_fa = max(v for (t, *_), v in result["fa"].items() if t == name)
        lines.append(f"  {name:34s} c = {result['thresholds'][name]:.2f}  worst FA/day "
                     f"{worst_fa:.3f}  mean detection {mean:.3f}")
    chosen = best_test(result)
    lines.append(f"chosen: {chosen}")
    lines.append("")
    lines.append(f"detection within 12 h of the fall, {chosen} (rows: samples of the class "
                 "per pass; columns: drop in points x passes per 6 h)")
    head = "| n \\ drop, passes/6h | " + " | ".join(
        f"{int(d * 100)} pts, {k}" for d in result["drops"] for k in result["cadences"]) + " |"
    lines.append(head)
    lines.append("|" + " --- |" * (1 + len(result["drops"]) * len(result["cadences"])))
    for n in result["ns"]:
        cells = [f"{result['power'][(chosen, n, k, d)]:.2f}" for d in result["drops"]
                 for k in result["cadences"]]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    old = result["tests"][0]
    lines.append("")
    lines.append(f"the same, {old} (the rule before), at its own calibrated c")
    lines.append(head)
    lines.append("|" + " --- |" * (1 + len(result["drops"]) * len(result["cadences"])))
    for n in result["ns"]:
        cells = [f"{result['power'][(old, n, k, d)]:.2f}" for d in result["drops"]
                 for k in result["cadences"]]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"false alarms per class-day (healthy), {chosen} vs the old rule at the same c-calibration")
    lines.append("| n | " + " | ".join(f"{k}/6h new | {k}/6h old" for k in result["cadences"]) + " |")
    lines.append("|" + " --- |" * (1 + 2 * len(result["cadences"])))
    for n in result["ns"]:
        cells = []
        for k in result["cadences"]:
            cells += [f"{result['fa'][(chosen, n, k)]:.3f}", f"{result['fa'][(old, n, k)]:.3f}"]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("mean detection (all n, drops 20 and 40 pts) per cadence, per test:")
    for name in result["tests"]:
        cells = []
        for k in result["cadences"]:
            v = [result["power"][(name, n, k, d)] for n in result["ns"] for d in result["drops"] if d >= 0.2]
            cells.append(f"{k}/6h {np.mean(v):.2f}")
        lines.append(f"  {name:34s} " + "  ".join(cells))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a reduced grid")
    args = ap.parse_args()
    quick = {"ns": (20, 100), "drops": (0.2,), "cadences": (6, 24), "classes": 1000}
    result = run(**(quick if args.quick else {}))
    print(report(result))


if __name__ == "__main__":
    main()
