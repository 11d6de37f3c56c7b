"""Lint for every Grafana dashboard in dashboards/ (file-provisioning ready).

Each dashboard: a stable uid ``prepwatch-<file stem>``; a ``$datasource`` variable of type
prometheus used by every panel and target; ``run`` and ``rank`` variables from
``label_values`` on a prepwatch metric; a unit on every panel; unique panel ids, no
overlapping panels; runbook links that resolve to a section of docs/runbooks/; and every
query parses as PromQL (``promtool check rules`` on a rule file made of them).
Whether the queries return data is tests/e2e/test_dashboard_queries.py's job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from runbook_links import ROOT, RUNBOOK_PREFIX, runbook_problem

DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
DATASOURCE_UIDS = {"${datasource}", "$datasource"}
BUILTINS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}
VARIABLE = re.compile(r"\$\{?(\w+)")


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def _data_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in _panels(dash) if p.get("type") not in ("row", "text")]


def _variables(dash: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dash.get("templating", {}).get("list", [])}


def _links(dash: dict[str, Any]) -> list[str]:
    urls = [link.get("url", "") for link in dash.get("links", [])]
    for panel in _panels(dash):
        urls += [link.get("url", "") for link in panel.get("links", [])]
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        urls += [link.get("url", "") for link in defaults.get("links", [])]
    return urls


def substitute(expr: str, regex: str = ".*", rate_interval: str = "30s") -> str:
    """The query as Prometheus would get it: variables become regexes, intervals durations."""
    for name in ("__rate_interval", "__interval", "__range"):
        expr = expr.replace("${" + name + "}", rate_interval).replace("$" + name, rate_interval)
    return VARIABLE.sub(regex, expr)


def test_there_are_dashboards() -> None:
    assert DASHBOARDS, "no dashboards/*.json"


def test_uids_are_stable_and_unique() -> None:
    seen: dict[str, str] = {}
    for path in DASHBOARDS:
        dash = _load(path)
        assert dash.get("uid") == f"prepwatch-{path.stem}", (
            f"{path.name}: uid must be prepwatch-{path.stem}, got {dash.get('uid')}"
        )
        assert len(dash["uid"]) <= 40, f"{path.name}: Grafana uids are at most 40 characters"
        assert dash["uid"] not in seen, f"{path.name} and {seen.get(dash['uid'])} share a uid"
        seen[dash["uid"]] = path.name
        assert dash.get("title"), f"{path.name}: no title"
        assert dash.get("id") in (None,), f"{path.name}: drop the numeric id (Grafana assigns it)"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_template_variables(path: Path) -> None:
    variables = _variables(_load(path))
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", (
        f"{path.name}: needs a $datasource variable of type datasource, query prometheus"
    )
    # class health has no $rank: the agent sums class series over a node's ranks
    for name in ("run",) if path.name == "class-health.json" else ("run", "rank"):
        var = variables.get(name)
        assert var and var["type"] == "query", f"{path.name}: needs a query variable ${name}"
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        assert re.match(rf"label_values\(prepwatch_\w+.*,\s*{name}\)$", query), (
            f"{path.name}: ${name} must be label_values(<prepwatch metric>, {name}), got {query}"
        )
    for name, var in variables.items():
        if var["type"] == "query":
            assert var.get("datasource", {}).get("uid") in DATASOURCE_UIDS, (
                f"{path.name}: variable ${name} must query $datasource"
            )


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_and_target_uses_the_datasource_variable(path: Path) -> None:
    dash = _load(path)
    defined = set(_variables(dash)) | BUILTINS
    for panel in _data_panels(dash):
        where = f"{path.name}: panel {panel.get('title')!r}"
        assert (panel.get("datasource") or {}).get("uid") in DATASOURCE_UIDS, (
            f"{where}: panel datasource must be ${{datasource}}"
        )
        assert panel.get("targets"), f"{where}: no targets"
        for target in panel["targets"]:
            assert (target.get("datasource") or {}).get("uid") in DATASOURCE_UIDS, (
                f"{where}: target {target.get('refId')} datasource must be ${{datasource}}"
            )
            assert target.get("expr", "").strip(), f"{where}: target without expr"
            unknown = set(VARIABLE.findall(target["expr"])) - defined
            assert not unknown, f"{where}: expr uses undefined variables {unknown}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_units_on_every_panel(path: Path) -> None:
    for panel in _data_panels(_load(path)):
        where = f"{path.name}: panel {panel.get('title')!r}"
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit, f"{where}: set fieldConfig.defaults.unit"
        if panel["type"] == "heatmap":
            assert panel.get("options", {}).get("yAxis", {}).get("unit"), (
                f"{where}: a heatmap needs options.yAxis.unit"
            )


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_layout(path: Path) -> None:
    panels = list(_panels(_load(path)))
    ids = [p.get("id") for p in panels]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, f"{path.name}: {panel['title']} too wide"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], (
                    f"{path.name}: panels {other!r} and {panel['title']!r} overlap"
                )


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_runbook_links_resolve(path: Path) -> None:
    urls = [u for u in _links(_load(path)) if u.startswith(RUNBOOK_PREFIX)]
    assert urls, f"{path.name}: link the runbooks (dashboard or panel links)"
    problems = [p for p in (runbook_problem(u) for u in urls) if p]
    assert not problems, "\n".join(problems)


def test_queries_parse_as_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (apt-get install prometheus)")
        pytest.skip("promtool not installed")
    rules = []
    for path in DASHBOARDS:
        for panel in _data_panels(_load(path)):
            for target in panel["targets"]:
                rules.append({"record": f"dashboard:query:{len(rules)}",
                              "expr": substitute(target["expr"])})
        for var in _variables(_load(path)).values():
            query = var.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            m = re.match(r"label_values\((.+),\s*\w+\)$", query or "")
            if m:
                rules.append({"record": f"dashboard:var:{len(rules)}", "expr": substitute(m.group(1))})
    rule_file = tmp_path / "dashboard_queries.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    res = subprocess.run([promtool, "check", "rules", str(rule_file)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
