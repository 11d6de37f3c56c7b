"""The report page: one HTML file, inline CSS and SVG, no script and no network."""

from __future__ import annotations

import math
import time
from html import escape
from typing import Any, Optional

from prepwatch._version import __version__
from prepwatch.diagnosis.findings import Finding, format_value
from prepwatch.report.svg import COLORS, bars, chart, fmt

BAR_TYPES = {"bargauge", "table", "gauge", "piechart"}


def _instant(series: list[dict[str, Any]]) -> bool:
    """Series with one finite point each read better as bars than as dots on a time axis."""
    counts = [sum(1 for _, v in s["points"] if math.isfinite(v)) for s in series]
    return bool(counts) and max(counts) <= 2


CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#dfe3ea;--bg:#f6f7f9;--card:#fff}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;padding-bottom:4px;
border-bottom:1px solid var(--line)}.meta{color:var(--muted)}
.finding{background:var(--card);border:1px solid var(--line);border-left:6px solid #999;border-radius:6px;
padding:10px 14px;margin:10px 0}.finding.critical{border-left-color:#c62828}
.finding.warning{border-left-color:#e0a000}.finding.info{border-left-color:#1f77b4}
.finding .v{font-weight:600;font-size:15px}.sev{display:inline-block;font-size:11px;font-weight:700;
padding:1px 6px;border-radius:3px;color:#fff;background:#999;margin-right:6px;vertical-align:2px}
.critical .sev{background:#c62828}.warning .sev{background:#b07d00}.info .sev{background:#1f77b4}
.finding ul{margin:6px 0;padding:0;list-style:none;display:flex;flex-wrap:wrap;gap:4px 8px}
.finding li{background:#f1f3f6;border-radius:4px;padding:1px 8px;font-size:13px}
.fix{color:#1b5e20;margin-top:6px}
.healthy{background:#e8f5e9;border:1px solid #a5d6a7;border-radius:6px;padding:12px 14px;font-weight:600}
table{border-collapse:collapse;background:var(--card);width:100%;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:right}th{background:#eef1f5}
td:first-child,th:first-child,td.l,table.left th,table.left td{text-align:left}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:14px}
.panel{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:10px 12px}
.panel h3{font-size:14px;margin:0 0 2px}.panel .desc{color:var(--muted);font-size:12px;margin:0 0 6px;
max-height:3em;overflow:hidden}
svg.chart{width:100%;height:auto;display:block}svg .grid{stroke:#eceff3;stroke-width:1}
svg .tick{font-size:10px;fill:#6b7385}svg .nodata{font-size:13px;fill:#8a93a3}
.legend{font-size:12px;color:var(--muted);margin-top:4px;column-count:2;column-gap:16px}
.legend span.sw{display:inline-block;width:10px;height:3px;margin-right:5px;vertical-align:3px}
.legend div{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.note{color:var(--muted);font-style:italic}
"""


def _t(ts: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _finding_html(d: dict[str, Any]) -> str:
    f = Finding.from_dict(d)
    scope = ", ".join(f"{k} {v}" for k, v in f.scope.items())
    ev = "".join(f"<li>{escape(e.text().strip())}</li>" for e in f.evidence)
    causes = " &gt; ".join(escape(c) for c in f.causes)
    alerts = f'<div class="meta">rules: {escape(", ".join(f.alerts))}</div>' if f.alerts else ""
    return (
        f'<div class="finding {escape(f.severity)}" data-finding="{escape(f.key)}">'
        f'<div class="v"><span class="sev">{escape(f.severity.upper())}</span>{escape(f.verdict)}</div>'
        f'<div class="meta">{escape(scope)}</div><ul>{ev}</ul>'
        f"<div><b>Likely causes</b>, most likely first: {causes}</div>"
        f'<div class="fix"><b>Try first:</b> {escape(f.fix)}</div>{alerts}</div>'
    )


def _v(r: dict[str, Any], k: str, unit: str) -> str:
    v = r.get(k)
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else escape(format_value(v, unit))


def _ranks_html(ranks: list[dict[str, Any]]) -> str:
    if not ranks:
        return '<p class="note">no rank reported a step</p>'
    head = (
        "run",
        "rank",
        "steps",
        "samples/s",
        "data-wait",
        "step p50",
        "step p99",
        "GPU busy",
        "worker CPU",
        "opens/s",
        "bytes/open",
    )
    rows = []
    for r in ranks:
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{c}</td>"
                for c in (
                    escape(str(r.get("run"))),
                    escape(str(r.get("rank"))),
                    _v(r, "steps", ""),
                    _v(r, "samples_per_s", ""),
                    _v(r, "wait_share", "%"),
                    _v(r, "step_p50", "s"),
                    _v(r, "step_p99", "s"),
                    _v(r, "gpu_busy", "%"),
                    _v(r, "worker_cpu", "%"),
                    _v(r, "opens_per_s", ""),
                    _v(r, "bytes_per_open", "B"),
                )
            )
            + "</tr>"
        )
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def _alerts_html(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return '<p class="note">none</p>'
    rows = []
    for a in alerts:
        labels = ", ".join(
            f"{k}={v}" for k, v in sorted(a["labels"].items()) if k not in ("alertname", "job", "severity")
        )
        rows.append(
            f'<tr data-alert="{escape(a["alertname"])}"><td>{escape(a["alertname"])}</td>'
            f'<td class="l">{escape(a["labels"].get("severity", ""))}</td>'
            f'<td class="l">{escape(labels)}</td><td>{_t(a["first"])}</td><td>{_t(a["last"])}</td></tr>'
        )
    return (
        '<table class="left"><tr><th>alert</th><th>severity</th><th>labels</th><th>first '
        "seen</th><th>last seen</th>"
        "</tr>" + "".join(rows) + "</table>"
    )


def _panel_html(p: Any, start: float, end: float) -> str:
    as_bars = p.type in BAR_TYPES or _instant(p.series)
    svg, drawn = bars(p.series, p.unit) if as_bars else chart(p.series, p.unit, start, end)
    legend = (
        ""
        if as_bars
        else "".join(
            f'<div title="{escape(s["name"])}"><span class="sw" '
            f'style="background:{COLORS[i % len(COLORS)]}"></span>'
            f"{escape(s['name'])}: {escape(fmt(_last(s), p.unit))}</div>"
            for i, s in enumerate(p.series)
        )
    )
    more = getattr(p, "more", 0)
    if more:
        legend += f"<div>+{more} more series</div>"
    errors = "".join(f'<div class="note">query error: {escape(e)}</div>' for e in p.errors)
    desc = f'<p class="desc">{escape(p.description)}</p>' if p.description else ""
    return (
        f'<section class="panel" data-panel="{escape(p.title)}" data-drawn="{drawn}" '
        f'data-series="{getattr(p, "returned", len(p.series))}">'
        f'<h3>{escape(p.title)}</h3>{desc}{svg}<div class="legend">{legend}</div>{errors}</section>'
    )


def _last(s: dict[str, Any]) -> float:
    vals = [v for _, v in s["points"] if math.isfinite(v)]
    return vals[-1] if vals else math.nan


def render(data: dict[str, Any]) -> str:
    findings = data["findings"]
    verdict = (
        '<div class="healthy" data-finding="">Healthy: no finding.</div>'
        if not findings
        else "".join(_finding_html(f) for f in findings)
    )
    body = [
        f"<h1>prepwatch report: run {escape(str(data['run']))}</h1>",
        f'<div class="meta">{_t(data.get("start"))} to {_t(data.get("end"))} &middot; '
        f"{escape(data['source'])} &middot; prepwatch {__version__} &middot; generated "
        f"{_t(time.time())}</div>",
        "<h2>Verdict</h2>",
        verdict,
        f"<h2>{escape(data['alerts_label'])}</h2>",
        _alerts_html(data["alerts"]),
        "<h2>Ranks (last 5 minutes of the run)</h2>",
        _ranks_html(data["ranks"]),
    ]
    if data.get("note"):
        body.append(f'<p class="note">{escape(data["note"])}</p>')
    for title, panels in data["dashboards"]:
        body.append(f'<h2>Dashboard: {escape(title)}</h2><div class="grid">')
        body += [_panel_html(p, data["start"], data["end"]) for p in panels]
        body.append("</div>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>prepwatch report: {escape(str(data['run']))}</title>"
        f"<style>{CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n"
    )
