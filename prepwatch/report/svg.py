"""Static line charts as inline SVG: no script, no network, readable when printed."""

from __future__ import annotations

import math
import time
from html import escape
from typing import Any

from prepwatch.diagnosis.findings import format_value

W, H = 520, 200
PAD_L, PAD_R, PAD_T, PAD_B = 62, 12, 10, 24
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
UNITS = {"percentunit": "%", "s": "s", "bytes": "B", "decbytes": "B", "ms": "ms", "percent": "pct"}


def fmt(v: float, unit: str) -> str:
    u = UNITS.get(unit, "")
    if u == "ms":
        return format_value(v / 1000, "s")
    if u == "pct":
        return f"{v:.0f}%"
    if u in ("%", "s", "B"):
        return format_value(v, u)
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.1f}M"
    if a >= 1e3:
        return f"{v / 1e3:.1f}k"
    if a >= 10 or v == 0:
        return f"{v:.0f}"
    return f"{v:.2g}"


def _nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """Round ticks that enclose [lo, hi]: the first at or below lo, the last at or above hi."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    return [start + i * step for i in range(int(round((stop - start) / step)) + 1)]


def chart(series: list[dict[str, Any]], unit: str, start: float, end: float) -> tuple[str, int]:
    """SVG for [{name, points: [(t, v)]}]; returns (svg, number of series drawn)."""
    pts_all = [v for s in series for _, v in s["points"] if math.isfinite(v)]
    if not pts_all:
        return (
            f'<svg class="chart" viewBox="0 0 {W} {H}" role="img"><text x="{W / 2}" y="{H / 2}" '
            f'text-anchor="middle" class="nodata">no data in this window</text></svg>',
            0,
        )
    lo, hi = min(pts_all), max(pts_all)
    lo = min(lo, 0.0) if lo >= 0 else lo
    if unit == "percentunit":
        hi = max(hi, 0.05)
    if hi == lo:
        hi = lo + (abs(lo) or 1.0)
    ticks = _nice_ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1]
    span = max(end - start, 1e-9)

    def x(t: float) -> float:
        return PAD_L + (t - start) / span * (W - PAD_L - PAD_R)

    def y(v: float) -> float:
        return PAD_T + (1 - (v - lo) / (hi - lo)) * (H - PAD_T - PAD_B)

    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img">']
    for tv in ticks:
        parts.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(tv):.1f}" y2="{y(tv):.1f}" class="grid"/>'
            f'<text x="{PAD_L - 6}" y="{y(tv) + 4:.1f}" text-anchor="end" class="tick">'
            f"{escape(fmt(tv, unit))}</text>"
        )
    for i in range(5):
        t = start + span * i / 4
        anchor = "start" if i == 0 else ("end" if i == 4 else "middle")
        parts.append(
            f'<text x="{x(t):.1f}" y="{H - 6}" text-anchor="{anchor}" class="tick">'
            f"{time.strftime('%H:%M:%S', time.localtime(t))}</text>"
        )
    drawn = 0
    for i, s in enumerate(series):
        color = COLORS[i % len(COLORS)]
        segs, cur = [], []
        for t, v in s["points"]:
            if math.isfinite(v):
                cur.append(f"{x(t):.1f},{y(v):.1f}")
            elif cur:
                segs.append(cur)
                cur = []
        if cur:
            segs.append(cur)
        for seg in segs:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
            else:
                parts.append(
                    f'<path d="M{" L".join(seg)}" stroke="{color}" fill="none" stroke-width="1.6" '
                    f'data-points="{len(seg)}"/>'
                )
        if segs:
            drawn += 1
    parts.append("</svg>")
    return "".join(parts), drawn


def bars(series: list[dict[str, Any]], unit: str) -> tuple[str, int]:
    """Horizontal bars of each series' last value (tables, bar gauges, stats)."""
    last = []
    for s in series:
        vals = [v for _, v in s["points"] if math.isfinite(v)]
        if vals:
            last.append((s["name"], vals[-1]))
    if not last:
        return chart([], unit, 0, 1)
    row = 22
    h = PAD_T + row * len(last) + 4
    hi = max(max(abs(v) for _, v in last), 1e-12)
    if unit == "percentunit":
        hi = max(hi, 1.0)
    label_w, value_w = 170, 70
    bar_w = W - label_w - value_w - 8
    parts = [f'<svg class="chart" viewBox="0 0 {W} {h}" role="img">']
    for i, (name, v) in enumerate(last):
        y = PAD_T + i * row
        w = max(abs(v) / hi * bar_w, 1.0)
        color = COLORS[i % len(COLORS)]
        short = name if len(name) <= 28 else name[:27] + "\u2026"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" class="tick">{escape(short)}</text>'
            f'<path d="M{label_w},{y + 4} h{w:.1f} v14 h{-w:.1f} Z" fill="{color}" data-points="1"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" class="tick">{escape(fmt(v, unit))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts), len(last)
