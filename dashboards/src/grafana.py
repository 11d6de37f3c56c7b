"""prepwatch's dashboard conventions, written once.

Every dashboard gets: uid ``prepwatch-<slug>`` (stable, the file is ``<slug>.json``); a
``$datasource`` variable used by every panel and query; ``run``/``instance``/``rank``
variables chained from one metric of the capability; a unit and a description on every
panel; panel ids in reading order; a layout computed from each panel's width and height;
runbook links built from the alert name; a "prepwatch" dropdown to the other dashboards.
A dashboard module only lists rows, panels and their PromQL.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

Json = dict[str, Any]

DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
# The one setting for rules and dashboards (set it with python -m dashboards.src.runbook_base URL)
RUNBOOKS = (Path(__file__).resolve().parents[2] / "alerts" / "RUNBOOK_BASE").read_text().strip()
WIDTH = 24  # Grafana's grid

# Timeseries styles (fieldConfig.defaults.custom): lines, and stacked areas for counts by kind.
LINES: Json = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
               "spanNulls": False}
CONNECTED: Json = {**LINES, "spanNulls": True}  # sparse series (sampled checks): no gaps
STACKED: Json = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 40, "showPoints": "never",
                 "spanNulls": True, "stacking": {"mode": "normal", "group": "A"}}
DASHED: Json = {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}

# Legends: a table with the last value (per-rank and per-class series), or a plain list
# under narrow panels.
LEGEND_TABLE: Json = {
    "legend": {"displayMode": "table", "placement": "right", "showLegend": True,
               "calcs": ["lastNotNull"]},
    "tooltip": {"mode": "multi", "sort": "none"},
}
LEGEND_LIST: Json = {
    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
    "tooltip": {"mode": "multi", "sort": "desc"},
}
_REDUCE: Json = {"calcs": ["lastNotNull"], "fields": "", "values": False}
# Stats: a value with its sparkline, or a coloured tile named by series (shares against a
# threshold).
STAT_SPARK: Json = {"reduceOptions": _REDUCE, "colorMode": "value", "graphMode": "area",
                    "textMode": "auto", "justifyMode": "auto", "orientation": "auto"}
STAT_TILE: Json = {"reduceOptions": _REDUCE, "colorMode": "background", "graphMode": "none",
                   "textMode": "value_and_name", "justifyMode": "auto", "orientation": "auto"}


def thresholds(base: str, *steps: tuple[float, str]) -> Json:
    """Absolute thresholds: ``base`` colour below the first step."""
    return {"mode": "absolute", "steps": [{"color": base, "value": None}]
            + [{"color": color, "value": value} for value, color in steps]}


def runbook(page: str, alert: str) -> Json:
    """A panel link to the runbook section of ``alert`` in docs/runbooks/<page>.md."""
    return {"title": f"Runbook: {alert}", "url": f"{RUNBOOKS}{page}.md#{alert.lower()}",
            "targetBlank": True}


def q(expr: str, legend: str = "", *, instant: bool = False, fmt: Optional[str] = None) -> Json:
    """One PromQL query; the panel gives it the datasource and its refId.

    ``SEL`` in ``expr`` stands for the dashboard's filter on its variables
    (``run=~"$run", rank=~"$rank", instance=~"$instance"``), so no query can forget one.
    """
    target: Json = {"expr": expr, "legendFormat": legend}
    if instant:
        target.update(instant=True, range=False)
    else:
        target["range"] = True
    if fmt:
        target["format"] = fmt
    return target


@dataclass
class Panel:
    type: str
    title: str
    unit: str
    description: str
    targets: Sequence[Json]
    w: int
    h: int = 8
    links: Sequence[Json] = ()
    defaults: Json = field(default_factory=dict)  # more fieldConfig.defaults (min, max, ...)
    custom: Optional[Json] = None  # fieldConfig.defaults.custom
    options: Json = field(default_factory=dict)
    overrides: Sequence[Json] = ()
    transformations: Optional[Sequence[Json]] = None

    def __post_init__(self) -> None:
        if not self.unit or not self.description:
            raise ValueError(f"panel {self.title!r}: a unit and a description are required")

    def render(self, pid: int, pos: Json, sel: str) -> Json:
        defaults: Json = {"unit": self.unit}
        if self.custom is not None:
            defaults["custom"] = self.custom
        defaults.update(self.defaults)
        targets = []
        for i, t in enumerate(self.targets):
            expr = re.sub(r"\bSEL\b", sel, t["expr"])
            targets.append({"datasource": DATASOURCE, **t, "expr": expr, "refId": chr(ord("A") + i)})
        out: Json = {
            "type": self.type, "id": pid, "title": self.title, "description": self.description,
            "datasource": DATASOURCE, "gridPos": pos,
            "fieldConfig": {"defaults": defaults, "overrides": list(self.overrides)},
            "targets": targets,
        }
        if self.transformations is not None:
            out["transformations"] = list(self.transformations)
        out["links"] = list(self.links)
        out["options"] = self.options
        return copy.deepcopy(out)


def timeseries(title: str, unit: str, description: str, targets: Sequence[Json], *,
               legend: Json = LEGEND_TABLE, custom: Json = LINES, **kw: Any) -> Panel:
    return Panel("timeseries", title, unit, description, targets, custom=custom,
                 options=legend, **kw)


def stat(title: str, unit: str, description: str, targets: Sequence[Json], *,
         style: Json = STAT_TILE, **kw: Any) -> Panel:
    return Panel("stat", title, unit, description, targets, options=style, **kw)


def table(title: str, unit: str, description: str, targets: Sequence[Json], **kw: Any) -> Panel:
    kw.setdefault("options", {"showHeader": True})
    kw.setdefault("transformations", [])
    return Panel("table", title, unit, description, targets, **kw)


def bargauge(title: str, unit: str, description: str, targets: Sequence[Json], *,
             display: str = "basic", **kw: Any) -> Panel:
    options = {"reduceOptions": _REDUCE, "orientation": "horizontal", "displayMode": display,
               "showUnfilled": True}
    return Panel("bargauge", title, unit, description, targets, options=options, **kw)


def heatmap(title: str, unit: str, description: str, targets: Sequence[Json], **kw: Any) -> Panel:
    """A heatmap of a Prometheus histogram (``format: heatmap`` buckets, no recalculation)."""
    options = {
        "calculate": False, "yAxis": {"unit": unit, "axisPlacement": "left"}, "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange",
                  "scale": "exponential", "exponent": 0.5, "steps": 64},
        "rowsFrame": {"layout": "auto"}, "tooltip": {"show": True, "yHistogram": True},
        "legend": {"show": True}, "filterValues": {"le": 1e-09},
    }
    return Panel("heatmap", title, unit, description, targets, options=options, **kw)


def rank_heatmap(title: str, unit: str, description: str, targets: Sequence[Json],
                 **kw: Any) -> Panel:
    """Ranks as rows, time as columns, the value as colour: readable at hundreds of ranks."""
    options = {
        "calculate": False, "yAxis": {"axisPlacement": "left", "unit": "none"}, "cellGap": 0,
        "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange",
                  "scale": "linear", "steps": 64, "min": 0, "max": 1},
        "rowsFrame": {"layout": "unknown"}, "tooltip": {"show": True, "yHistogram": False},
        "legend": {"show": True}, "cellValues": {"unit": unit},
    }
    return Panel("heatmap", title, unit, description, targets, options=options, **kw)


@dataclass
class Row:
    title: str
    panels: Sequence[Panel]


def query_var(name: str, label: str, query: str, *, all_values: bool = True, sort: int = 1,
              hide: int = 0) -> Json:
    """A variable filled by ``label_values(...)`` on $datasource, "All" selected by default."""
    var: Json = {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "definition": query, "query": {"query": query, "refId": f"{name}-var"}, "refresh": 2,
        "includeAll": all_values, "multi": all_values,
    }
    if all_values:
        var["allValue"] = ".*"
        var["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        var["current"] = {}
    var.update(sort=sort, hide=hide, options=[], regex="")
    return var


def variables(metric: str, *, instance: bool = True, rank: bool = True,
              extra: Sequence[Json] = ()) -> list[Json]:
    """$datasource, then $run, $instance and $rank chained from ``metric``, then ``extra``."""
    chain = 'run=~"$run", instance=~"$instance"' if instance else 'run=~"$run"'
    out = [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [],
         "refresh": 1, "regex": ""},
        query_var("run", "Job (run)", f"label_values({metric}, run)"),
    ]
    if instance:
        out.append(query_var("instance", "Node (endpoint)",
                             f'label_values({metric}{{run=~"$run"}}, instance)'))
    if rank:
        out.append(query_var("rank", "Rank", f"label_values({metric}{{{chain}}}, rank)", sort=3))
    return out + list(extra)


def layout(rows: Sequence[Row], sel: str) -> list[Json]:
    """Panels in reading order, each placed as high as it fits, then leftmost.

    A row header spans the width below everything above it; its panels fill the grid like
    Grafana's own gravity does, so a half-height panel stacks under its neighbour.
    """
    out: list[Json] = []
    bottom = 0
    for row in rows:
        out.append({"type": "row", "id": len(out) + 1, "title": row.title, "collapsed": False,
                    "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": bottom}, "panels": []})
        skyline = [bottom + 1] * WIDTH
        for panel in row.panels:
            if not 0 < panel.w <= WIDTH:
                raise ValueError(f"panel {panel.title!r}: width {panel.w} not in 1..{WIDTH}")
            x = min(range(WIDTH - panel.w + 1), key=lambda i: (max(skyline[i:i + panel.w]), i))
            y = max(skyline[x:x + panel.w])
            skyline[x:x + panel.w] = [y + panel.h] * panel.w
            out.append(panel.render(len(out) + 1, {"h": panel.h, "w": panel.w, "x": x, "y": y}, sel))
        bottom = max(skyline)
    return out


@dataclass
class Dashboard:
    slug: str  # file <slug>.json, uid prepwatch-<slug>
    title: str
    description: str
    tags: Sequence[str]
    metric: str  # the capability's metric that $run, $instance and $rank list values of
    rows: Sequence[Row]
    runbook_page: str
    runbook_title: str
    instance: bool = True  # a $instance variable (node) and filter
    rank: bool = True  # a $rank variable and filter (off where the series are per run, not rank)
    extra_variables: Sequence[Json] = ()
    links: Sequence[Json] = ()  # after the runbook and the prepwatch dropdown

    @property
    def uid(self) -> str:
        return f"prepwatch-{self.slug}"

    @property
    def selector(self) -> str:
        """What ``SEL`` in a query becomes: a filter on every identity variable."""
        sel = 'run=~"$run"' + (', rank=~"$rank"' if self.rank else "")
        return sel + ', instance=~"$instance"' if self.instance else sel

    def render(self) -> Json:
        links = [
            {"title": f"Runbook: {self.runbook_title}", "type": "link",
             "url": f"{RUNBOOKS}{self.runbook_page}.md", "targetBlank": True, "icon": "doc",
             "tooltip": "What each alert means and what to do"},
            {"title": "prepwatch", "type": "dashboards", "tags": ["prepwatch"], "asDropdown": True,
             "icon": "external link", "includeVars": True, "keepTime": True, "targetBlank": False,
             "tooltip": "The other prepwatch dashboards"},
            *self.links,
        ]
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["prepwatch", *self.tags], "editable": True, "graphTooltip": 1,
            "refresh": "10s", "schemaVersion": 39, "version": 1,
            "time": {"from": "now-30m", "to": "now"}, "timepicker": {}, "timezone": "",
            "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts", "type": "dashboard"}]},
            "links": links,
            "templating": {"list": variables(self.metric, instance=self.instance, rank=self.rank,
                                             extra=self.extra_variables)},
            "panels": layout(self.rows, self.selector),
        }
