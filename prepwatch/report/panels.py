"""Every panel of the shipped dashboards, with its own queries made concrete for one run.

The dashboard JSON is walked generically (rows, nested panels, any file name), so a
dashboard regenerated, split or renamed upstream is rendered as it is shipped.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

VARIABLE = re.compile(r"\$\{?(\w+)(?::\w+)?\}?")
SKIP_TYPES = {"row", "text", "news", "dashlist", "alertlist"}


@dataclass
class Panel:
    dashboard: str
    title: str
    type: str
    unit: str
    description: str
    targets: list[tuple[str, str, str]]  # (refId, expr, legendFormat)
    series: list[dict[str, Any]] = field(default_factory=list)  # filled by gather
    errors: list[str] = field(default_factory=list)


def dashboards_dir() -> Path:
    env = os.environ.get("PREPWATCH_DASHBOARDS_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[1]
    for candidate in (here / "dashboards", here.parent / "dashboards"):
        if any(candidate.glob("*.json")):
            return candidate
    raise FileNotFoundError("no prepwatch dashboards next to the package; set $PREPWATCH_DASHBOARDS_DIR")


def _walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _walk(p.get("panels", []) or [])


def load_panels(directory: Optional[Path] = None) -> list[tuple[str, list[Panel]]]:
    out = []
    for path in sorted(Path(directory or dashboards_dir()).glob("*.json")):
        dash = json.loads(path.read_text(encoding="utf-8"))
        panels = []
        for p in _walk(dash.get("panels", [])):
            if p.get("type") in SKIP_TYPES:
                continue
            targets = [
                (t.get("refId", ""), t["expr"], t.get("legendFormat", ""))
                for t in p.get("targets", [])
                if t.get("expr")
            ]
            if not targets:
                continue
            unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "") or ""
            panels.append(
                Panel(
                    dash.get("title", path.stem),
                    p.get("title", ""),
                    p.get("type", ""),
                    unit,
                    p.get("description", "") or "",
                    targets,
                )
            )
        out.append((dash.get("title", path.stem), panels))
    return out


def concrete(expr: str, run: str, rate_interval: str) -> str:
    """The panel's query as Grafana would send it for this run ("All" for other variables)."""
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", rate_interval, expr)

    def sub(m: re.Match) -> str:
        if m.group(1) != "run":
            return ".*"
        return run if re.fullmatch(r"\w+", run) else re.escape(run).replace("\\", "\\\\")

    return VARIABLE.sub(sub, expr)


def legend(fmt: str, labels: dict[str, str]) -> str:
    if fmt and fmt != "__auto":
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)
    inner = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")
    return labels.get("__name__", "") + (f"{{{inner}}}" if inner else "") or "value"
