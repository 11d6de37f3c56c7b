"""`prepwatch compare a.json b.json`: what changed between two runs and whether it matters.

Run-to-run noise: the same job on the same hardware varies by a few percent in throughput
(page cache, clocks, neighbours), so a change counts only beyond the larger of a floor
(``REL_FLOOR`` for rates and times, ``SHARE_FLOOR`` points for the data-wait share) and
three standard errors of the runs' own step-time spread (p50..p99 of each run, over its
number of steps). Findings are matched by their key: new, resolved, still there.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Optional

REL_FLOOR = 0.05
SHARE_FLOOR = 0.02
Z_P99 = 2.326  # a normal distribution's p99 is 2.326 sigma above its median


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="what changed between two runs' summary.json",
        description="Compare two end-of-run summaries (summary.json): throughput, data-wait "
        "share and step quantiles per rank, and findings; says which changes are beyond "
        "run-to-run noise.",
    )
    p.add_argument("a", type=Path, help="the baseline summary.json")
    p.add_argument("b", type=Path, help="the new summary.json")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def load(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("prepwatch.summary/"):
        raise ValueError(f"{path} is not a prepwatch summary.json (no 'schema': 'prepwatch.summary/...')")
    return data


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not math.isnan(float(v)) else None


def _step_se(rank: dict[str, Any]) -> float:
    """Relative standard error of the mean step time, from the run's own spread."""
    p50, p99, steps = _num(rank.get("step_p50")), _num(rank.get("step_p99")), _num(rank.get("steps"))
    if not p50 or p99 is None or not steps:
        return 0.0
    sigma = max(p99 - p50, 0.0) / Z_P99
    return sigma / p50 / math.sqrt(steps)


def _change(
    metric: str, a: Optional[float], b: Optional[float], kind: str, se: float, better: str
) -> Optional[dict[str, Any]]:
    if a is None or b is None:
        return None
    if kind == "share":
        delta = b - a
        noise = max(SHARE_FLOOR, 3 * se * max(a, b))
        significant = abs(delta) > noise
        rel = None
    else:
        if a == 0:
            return None
        rel = b / a - 1
        delta = b - a
        noise = max(REL_FLOOR, 3 * se)
        significant = abs(rel) > noise
    worse = (delta > 0) if better == "lower" else (delta < 0)
    return {
        "metric": metric,
        "a": a,
        "b": b,
        "delta": delta,
        "relative": rel,
        "noise": noise,
        "significant": significant,
        "direction": ("worse" if worse else "better") if significant else "same",
    }


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    changes = []
    ra = {r["rank"]: r for r in a.get("ranks", [])}
    rb = {r["rank"]: r for r in b.get("ranks", [])}
    se_all = max([_step_se(r) for r in [*ra.values(), *rb.values()]] or [0.0])
    c = _change(
        "samples/s",
        _num(a.get("samples_per_s")),
        _num(b.get("samples_per_s")),
        "rate",
        math.sqrt(2) * se_all,
        "higher",
    )
    if c:
        changes.append(c)
    for rank in sorted(set(ra) & set(rb)):
        x, y = ra[rank], rb[rank]
        se = math.hypot(_step_se(x), _step_se(y))
        for key, label, kind, better in (
            ("samples_per_s", "samples/s", "rate", "higher"),
            ("wait_share", "data-wait share", "share", "lower"),
            ("step_p50", "step p50", "time", "lower"),
            ("step_p99", "step p99", "time", "lower"),
        ):
            ch = _change(f"rank {rank} {label}", _num(x.get(key)), _num(y.get(key)), kind, se, better)
            if ch:
                changes.append(ch)
    fa = {f["key"]: f for f in a.get("findings", [])}
    fb = {f["key"]: f for f in b.get("findings", [])}
    findings = {
        "new": [fb[k] for k in fb if k not in fa],
        "resolved": [fa[k] for k in fa if k not in fb],
        "kept": [fb[k] for k in fb if k in fa],
    }
    worse = [c for c in changes if c["direction"] == "worse"]
    better = [c for c in changes if c["direction"] == "better"]
    if not worse and not better and not findings["new"] and not findings["resolved"]:
        verdict = "no change beyond run-to-run noise"
    else:
        parts = []
        if worse:
            parts.append(f"{len(worse)} figure(s) worse")
        if better:
            parts.append(f"{len(better)} better")
        if findings["new"]:
            parts.append("new: " + ", ".join(findings["new"][i]["key"] for i in range(len(findings["new"]))))
        if findings["resolved"]:
            parts.append("resolved: " + ", ".join(f["key"] for f in findings["resolved"]))
        verdict = "; ".join(parts)
    return {
        "a": {"run": a.get("run"), "path": a.get("path")},
        "b": {"run": b.get("run"), "path": b.get("path")},
        "verdict": verdict,
        "changes": changes,
        "findings": findings,
    }


def format_text(result: dict[str, Any]) -> str:
    from prepwatch.diagnosis.findings import format_value

    lines = [f"prepwatch compare: {result['a']['run']} -> {result['b']['run']}: {result['verdict']}"]
    for c in result["changes"]:
        unit = "%" if "share" in c["metric"] else ("s" if "step" in c["metric"] else "")
        a, b = (
            (format_value(c["a"], unit), format_value(c["b"], unit))
            if unit
            else (f"{c['a']:.1f}", f"{c['b']:.1f}")
        )
        if c["relative"] is not None:
            size = f"{c['relative'] * 100:+.1f}% (noise {c['noise'] * 100:.1f}%)"
        else:
            size = f"{c['delta'] * 100:+.1f} points (noise {c['noise'] * 100:.1f})"
        mark = {"worse": "WORSE ", "better": "better", "same": "  same"}[c["direction"]]
        lines.append(f"  {mark}  {c['metric']}: {a} -> {b}  {size}")
    for label in ("new", "resolved", "kept"):
        for f in result["findings"][label]:
            lines.append(f"  finding {label}: [{f['severity']}] {f['verdict']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    result = compare(load(args.a), load(args.b))
    print(json.dumps(result, indent=2) if args.json else format_text(result))
    return 0
