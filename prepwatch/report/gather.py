"""Everything a report shows, from a Prometheus server or from a summary.json."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any, Optional

from prepwatch.diagnosis.engine import rank_stats
from prepwatch.diagnosis.series import Window, from_query_result
from prepwatch.diagnosis.verdicts import diagnose
from prepwatch.report.panels import concrete, legend, load_panels
from prepwatch.report.prom import PromError, Prometheus

SNAPSHOTS = 40
POINTS = 150
MAX_SERIES = 8


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*", text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 2h)")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2) or "s"]


def _run_selector(run: str) -> str:
    return run if re.fullmatch(r"[\w.-]+", run) else re.escape(run).replace("\\", "\\\\")


def from_prometheus(
    prom: Prometheus, run: str, since: float, until: Optional[float] = None, rate_interval: str = "1m"
) -> dict[str, Any]:
    end = until or time.time()
    start = end - since
    sel = _run_selector(run)
    step = max(since / POINTS, 1.0)
    alive = prom.query_range(f'count(prepwatch_build_info{{run="{sel}"}})', start, end, step)
    times = [float(t) for row in alive for t, _ in row["values"]]
    if not times:
        raise ValueError(f"no series of run {run!r} in {prom.url} over the last {since:.0f} s")
    t0, t1 = min(times), max(times)
    snaps = []
    n = max(2, min(SNAPSHOTS, int((t1 - t0) / 1.0) + 1))
    for i in range(n):
        t = t0 + (t1 - t0) * i / (n - 1)
        snaps.append(from_query_result(prom.query(f'{{__name__=~"prepwatch_.+", run=~"{sel}|"}}', t), t))
    window = Window(snaps, start=t0)
    findings = diagnose(window)
    stats = rank_stats(window)
    alerts: dict[tuple, dict[str, Any]] = {}
    for row in prom.query_range(f'ALERTS{{alertstate="firing", run=~"{sel}|"}}', start, end, step):
        m = {k: v for k, v in row["metric"].items() if k not in ("__name__", "alertstate")}
        ts = [float(t) for t, _ in row["values"]]
        key = tuple(sorted(m.items()))
        a = alerts.setdefault(
            key, {"alertname": m.get("alertname", ""), "labels": m, "first": min(ts), "last": max(ts)}
        )
        a["first"], a["last"] = min(a["first"], min(ts)), max(a["last"], max(ts))
    dashboards = []
    pstep = max((t1 - t0) / POINTS, 1.0)
    for title, panels in load_panels():
        for p in panels:
            for _ref, expr, fmt in p.targets:
                q = concrete(expr, run, rate_interval)
                try:
                    result = prom.query_range(q, t0, t1, pstep)
                except PromError as exc:
                    p.errors.append(str(exc))
                    continue
                for row in result:
                    pts = [(float(t), float(v)) for t, v in row["values"]]
                    p.series.append({"name": legend(fmt, row["metric"]), "points": pts})
            finite = [s for s in p.series if any(math.isfinite(v) for _, v in s["points"])]
            p.returned = len(p.series)  # type: ignore[attr-defined]
            p.series = sorted(finite, key=lambda s: -abs(_last(s)))[:MAX_SERIES]
            p.more = max(len(finite) - MAX_SERIES, 0)  # type: ignore[attr-defined]
        dashboards.append((title, panels))
    return {
        "run": run,
        "source": f"Prometheus {prom.url}",
        "start": t0,
        "end": t1,
        "findings": [f.to_dict() for f in findings],
        "ranks": [s.to_dict() for s in stats],
        "alerts": sorted(alerts.values(), key=lambda a: a["first"]),
        "alerts_label": "Alerts that fired (ALERTS)",
        "dashboards": dashboards,
    }


def _last(s: dict[str, Any]) -> float:
    vals = [v for _, v in s["points"] if math.isfinite(v)]
    return vals[-1] if vals else 0.0


def from_summary(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not str(data.get("schema", "")).startswith("prepwatch.summary/"):
        raise ValueError(f"{path} is not a prepwatch summary.json")
    return {
        "run": data.get("run", "?"),
        "source": f"summary {path}",
        "start": data.get("started"),
        "end": data.get("ended"),
        "findings": data.get("findings", []),
        "ranks": data.get("ranks", []),
        "alerts": [
            {"alertname": a, "labels": {}, "first": None, "last": None}
            for a in data.get("alerts_would_fire", [])
        ],
        "alerts_label": "Alerts whose condition held at the end of the run",
        "dashboards": [],
        "note": "Panels need the series over time: make the report from Prometheus "
        "(--prometheus URL --run NAME) to include every dashboard panel.",
    }
