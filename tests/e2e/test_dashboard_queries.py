"""Every query of every dashboard returns data from a real healthy demo run.

Template variables become ``.*`` and ``$__rate_interval`` becomes ``RATE_INTERVAL``, the
way Grafana would send them with "All" selected. The queries that need a GPU (they read
``prepwatch_gpu_*`` series, which only a node with an NVIDIA driver has) are listed in
``GPU_ONLY``; the list must be exactly those queries. They must still run without error,
and where the scraped node does report a GPU (``prepwatch_gpu_available == 1``) they
must return data too.

A query whose every value is NaN passes only while one of the counters it divides by did
not move in the window (no file was opened, so there is no open latency to show): the
series exist and the expression is right, there is nothing to measure. Such queries are
printed; any other all-NaN result fails.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterator

import pytest
from e2e_stack import ROOT, Stack

pytestmark = pytest.mark.e2e

RATE_INTERVAL = "30s"
GPU_METRIC = re.compile(r"\bprepwatch_gpu_\w+")
DDP_METRIC = re.compile(r"\bprepwatch_collective_\w+")
VARIABLE = re.compile(r"\$\{?(\w+)\}?")
LABEL_VALUES = re.compile(r"label_values\((.+),\s*(\w+)\)$")

# (dashboard file, panel title, refId) of the queries that need a GPU; variables as
# (dashboard file, "$name", "var").
GPU_ONLY = {
    ("input-pipeline.json", "GPU busy vs data-wait share", "A"),
    ("input-pipeline.json", "GPU busy per GPU", "A"),
    ("input-pipeline.json", "GPU memory used", "A"),
    ("input-pipeline.json", "GPU memory used", "B"),
    ("input-pipeline.json", "$gpu", "var"),
}
# Queries that need DDP ranks timed by watch.ddp(model): the healthy demo has none, so they
# must only run without error here; tests/e2e/test_distributed_e2e.py runs them against
# its real 3-rank gloo jobs and requires data.
DDP_ONLY = {
    ("input-pipeline.json", "Collective-wait share by rank", "A"),
}


def substitute(expr: str) -> str:
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", RATE_INTERVAL, expr)
    return VARIABLE.sub(".*", expr)


def queries() -> Iterator[tuple[tuple[str, str, str], str]]:
    """((file, panel title or $variable, refId or "var"), PromQL) for every dashboard."""
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        dash = json.loads(path.read_text(encoding="utf-8"))
        stack = list(dash.get("panels", []))
        while stack:
            panel = stack.pop(0)
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                yield (path.name, panel["title"], target["refId"]), target["expr"]
        for var in dash.get("templating", {}).get("list", []):
            query = var.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            m = LABEL_VALUES.match(query or "") if var.get("type") == "query" else None
            if m:
                yield (path.name, f"${var['name']}", "var"), m.group(1)


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in result)


def _idle_counters(stack: Stack, expr: str) -> list[str]:
    """Counters read by ``expr`` that did not increase over the rate interval."""
    idle = []
    for name in sorted(set(re.findall(r"\bprepwatch_\w+", expr))):
        counter = re.sub(r"_(bucket|sum|count)$", "_count", name)
        if not counter.endswith(("_count", "_total")):
            continue
        moved = stack.query(f"sum(increase({counter}[{RATE_INTERVAL}])) > 0")
        if not moved:
            idle.append(counter)
    return idle


def test_gpu_only_list_is_exactly_the_gpu_queries() -> None:
    gpu = {key for key, expr in queries() if GPU_METRIC.search(expr)}
    assert gpu == GPU_ONLY, (
        f"queries reading prepwatch_gpu_* but not listed: {sorted(gpu - GPU_ONLY)}; "
        f"listed but not reading GPU series: {sorted(GPU_ONLY - gpu)}"
    )


def test_ddp_only_list_is_exactly_the_collective_queries() -> None:
    ddp = {key for key, expr in queries() if DDP_METRIC.search(expr)}
    assert ddp == DDP_ONLY, f"not listed: {sorted(ddp - DDP_ONLY)}; stale: {sorted(DDP_ONLY - ddp)}"


def test_every_dashboard_has_queries() -> None:
    files = {p.name for p in (ROOT / "dashboards").glob("*.json")}
    assert {key[0] for key, _ in queries() if key[2] != "var"} == files


def test_every_dashboard_query_returns_data(healthy_stack: Stack, capsys) -> None:
    has_gpu = bool(healthy_stack.query("prepwatch_gpu_available == 1"))
    empty, nan_only, failed, idle = [], [], [], []
    checked = 0
    for key, expr in queries():
        promql = substitute(expr)
        try:
            result = healthy_stack.query(promql)
        except AssertionError as exc:  # Prometheus rejected the query
            failed.append(f"{key}: {exc}")
            continue
        checked += 1
        if (key in GPU_ONLY and not has_gpu) or key in DDP_ONLY:
            continue
        if not result:
            empty.append(f"{key}: {promql}")
        elif not _finite(result):
            counters = _idle_counters(healthy_stack, expr)
            if counters:
                idle.append(f"{key}: {counters} did not increase")
            else:
                nan_only.append(f"{key}: {promql}")
    problems = (
        [f"query error {p}" for p in failed] + [f"no data {p}" for p in empty]
        + [f"only NaN {p}" for p in nan_only]
    )
    if idle:
        with capsys.disabled():
            print("\n[e2e] all-NaN while their counters are idle in the healthy demo:\n  "
                  + "\n  ".join(idle))
    assert checked >= 20, f"only {checked} queries ran"
    assert not problems, "\n".join(problems)


def test_variables_resolve_to_the_demo(healthy_stack: Stack) -> None:
    """$run lists the demo's run, $rank its rank: the dashboard opens on data."""
    for key, expr in queries():
        if key[2] != "var" or key in GPU_ONLY:
            continue
        label = {"$run": "run", "$rank": "rank", "$instance": "instance"}.get(key[1])
        if label is None:
            continue
        values = {s["metric"].get(label) for s in healthy_stack.query(substitute(expr))}
        expected = {"run": "demo", "rank": "0"}.get(label)
        assert values - {None}, f"{key}: no {label} values"
        if expected:
            assert expected in values, f"{key}: {values}"
