"""The summary itself: identity, duration, per-rank figures, findings, alert conditions."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path
from typing import Any, Optional, TextIO

from prepwatch.diagnosis.engine import conditions, rank_stats
from prepwatch.diagnosis.findings import Finding, format_value
from prepwatch.diagnosis.series import Window
from prepwatch.diagnosis.thresholds import load
from prepwatch.diagnosis.verdicts import diagnose

SCHEMA = "prepwatch.summary/1"


def build_summary(w: Window, run: str, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    th = load()
    total = Window([w.last], start=w.start)  # counters start at zero with the job
    stats = rank_stats(total)
    findings = diagnose(w, th) if len(w.snapshots) > 1 else diagnose(total, th)
    conds = conditions(total, th, stats)
    steps = sum(s.steps for s in stats)
    duration = max(w.last.t - w.start, 0.0)
    ranks = []
    for s in stats:
        d = s.to_dict()
        ranks.append(
            {
                k: d[k]
                for k in (
                    "run",
                    "rank",
                    "steps",
                    "samples",
                    "steps_per_s",
                    "samples_per_s",
                    "wait_share",
                    "step_p50",
                    "step_p99",
                    "gpu_busy",
                    "opens_per_s",
                    "bytes_per_open",
                    "open_p99",
                    "worker_cpu",
                    "stages",
                )
            }
        )
    return {
        "schema": SCHEMA,
        "run": run,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": w.start,
        "ended": w.last.t,
        "duration_s": duration,
        "steps": steps,
        "samples_per_s": sum(s.samples for s in stats) / duration if duration > 0 else None,
        "ranks": ranks,
        "findings": [f.to_dict() for f in findings],
        "alerts_would_fire": sorted({c.alert for c in conds}),
        "alert_conditions": [{"alert": c.alert, "labels": c.labels, "value": c.value} for c in conds],
        **(extra or {}),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for stderr."""
    lines = [
        f"prepwatch summary: run {summary['run']!r}, {format_value(summary['duration_s'], 's')}, "
        f"{summary['steps']:.0f} steps, "
        + (f"{summary['samples_per_s']:.0f} samples/s" if summary.get("samples_per_s") else "no samples")
    ]
    for r in summary["ranks"]:

        def f(k: str, unit: str, r: dict = r) -> str:
            v = r.get(k)
            return format_value(v, unit) if v is not None else "n/a"

        lines.append(
            f"  rank {r['rank']}: data-wait {f('wait_share', '%')}, step p50 {f('step_p50', 's')} "
            f"p99 {f('step_p99', 's')}, {f('samples_per_s', '/s')} samples"
        )
    findings = [Finding.from_dict(d) for d in summary["findings"]]
    if not findings:
        lines.append("  verdict: healthy, no finding")
    for fd in findings[:5]:
        lines.append(f"  [{fd.severity}] {fd.verdict}")
        lines.append("      evidence: " + "; ".join(e.text() for e in fd.evidence[:4]))
        lines.append(f"      try first: {fd.fix}")
    if summary.get("alerts_would_fire"):
        lines.append("  alerts whose condition held: " + ", ".join(summary["alerts_would_fire"]))
    if summary.get("path"):
        lines.append(f"  summary.json: {summary['path']}")
    return "\n".join(lines)


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary["path"] = str(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(summary), indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _clean(o: Any) -> Any:
    """Strict JSON: NaN/inf become null."""
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def emit(w: Window, run: str, path: Optional[Path], err: TextIO, extra: Optional[dict] = None) -> dict:
    """Build, write (when ``path``) and print the summary."""
    summary = build_summary(w, run, extra)
    if path is not None:
        write_summary(summary, path)
    print(format_summary(summary), file=err, flush=True)
    return summary
