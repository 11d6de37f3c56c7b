"""End to end: 3 gloo ranks under torchrun under `prepwatch run`, real Prometheus, shipped rules.

The four cases of issue 15 run side by side under one `prepwatch run` (one node agent,
as on a real node; tests/jobs/four_cases.py starts one torchrun per case, each its own
run name), scraped by one Prometheus, with the repository's rule files shortened
(``WINDOWS``; every for: -> 10s). An agent serving 12 ranks on a loaded 2-core machine can
take seconds per scrape, so scrapes are every 4 s and the 5 m windows become 40 s. Each
case must raise the right alert on the right rank and nothing else from the rank
comparisons; the healthy run raises nothing. The diagnosis engine, reading the agent's
/metrics over the settling time as `prepwatch top` does, names the same two stragglers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import urllib.parse

import pytest
import yaml
from e2e_stack import E2E_FOR, ROOT, Proc, free_port, http_get, need, wait_until

from prepwatch.diagnosis import diagnose
from prepwatch.diagnosis.series import Snapshot, Window, parse_text

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOBS = ROOT / "tests" / "jobs"
CASES = ("healthy", "allslow", "slowcollate", "slowcompute")
RANK_ALERTS = {"PrepwatchInputStragglerRank", "PrepwatchComputeStragglerRank", "PrepwatchStragglerRank"}
# (run, alertname, rank) that must fire; every other rank comparison alert must not
EXPECTED = {
    ("allslow", "PrepwatchInputBoundCritical", "0"),
    ("allslow", "PrepwatchInputBoundCritical", "1"),
    ("allslow", "PrepwatchInputBoundCritical", "2"),
    ("slowcollate", "PrepwatchInputStragglerRank", "2"),
    ("slowcompute", "PrepwatchComputeStragglerRank", "2"),
}
# the engine's verdicts on the same ranks: (run, finding key, rank)
EXPECTED_FINDINGS = {("slowcollate", "straggler.input", "2"), ("slowcompute", "straggler.compute", "2")}
FIRE_TIMEOUT_S = 360.0
SETTLE_S = 55.0  # after the last expected alert: longer than a window plus for:
WINDOWS = {"5m": "40s", "10m": "80s"}
SCRAPE = "4s"


def _shorten(text: str) -> str:
    for long, short in WINDOWS.items():
        text = text.replace(f"[{long}]", f"[{short}]")
    return re.sub(r"^(\s*)for: \S+", rf"\1for: {E2E_FOR}", text, flags=re.M)


def _query(prom: str, expr: str) -> list[dict]:
    body = json.loads(http_get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", body
    return body["data"]["result"]


def _firing(prom: str) -> set[tuple[str, str, str]]:
    return {
        (m["metric"].get("run", ""), m["metric"]["alertname"], m["metric"].get("rank", ""))
        for m in _query(prom, 'ALERTS{alertstate="firing"}')
    }


def test_the_right_alert_on_the_right_rank_for_the_four_cases(tmp_path, capsys):
    prometheus = need("prometheus")
    port = free_port()
    rules = tmp_path / "rules"
    rules.mkdir()
    for path in sorted((ROOT / "alerts").glob("*.rules.yml")):
        (rules / path.name).write_text(_shorten(path.read_text()))
    prom_port = free_port()
    config = {
        "global": {"scrape_interval": SCRAPE, "evaluation_interval": "1s", "scrape_timeout": SCRAPE},
        "rule_files": [str(rules / "*.rules.yml")],
        "scrape_configs": [{"job_name": "prepwatch", "static_configs": [
            {"targets": [f"127.0.0.1:{port}"]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    logs = tmp_path / "logs"
    logs.mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    procs: list[Proc] = []
    try:
        job = Proc("job", [
            sys.executable, "-m", "prepwatch.cli.main", "run", "--port", str(port), "--",
            sys.executable, str(JOBS / "four_cases.py"), *CASES,
        ], logs, env=env)
        procs.append(job)
        wait_until(lambda: job.alive() and http_get(f"http://127.0.0.1:{port}/metrics"), 60,
                   "the agent")
        prom = Proc("prometheus", [
            prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn",
        ], logs)
        procs.append(prom)
        url = f"http://127.0.0.1:{prom_port}"
        wait_until(lambda: prom.alive() and http_get(f"{url}/-/ready"), 30, "Prometheus ready")
        t0 = time.monotonic()

        def expected_fired() -> bool:
            assert all(p.alive() for p in procs), "\n".join(p.log_tail() for p in procs)
            return EXPECTED <= _firing(url)

        try:
            wait_until(expected_fired, FIRE_TIMEOUT_S, "every expected alert", interval=1.0)
        except TimeoutError:
            share = _query(url, "run_rank:prepwatch_data_wait_seconds:excess_ratio_rate5m")
            deficit = _query(url, "run_rank:prepwatch_collective_wait_seconds:deficit_ratio_rate5m")
            scrape = _query(url, "scrape_duration_seconds")
            pytest.fail(f"missing {EXPECTED - _firing(url)}; firing {_firing(url)}\nscrape {scrape}\n"
                        f"excess {share}\ndeficit {deficit}\n" + "\n".join(p.log_tail(15) for p in procs))
        fired_after = time.monotonic() - t0

        def scrape() -> Snapshot:
            return parse_text(http_get(f"http://127.0.0.1:{port}/metrics", timeout=30).decode(), time.time())

        first = scrape()
        time.sleep(SETTLE_S)
        firing = _firing(url)
        window = Window([first, scrape()], start=first.t)
        per_step = {
            name: {(m["metric"]["run"], m["metric"]["rank"]): round(float(m["value"][1]), 3)
                   for m in _query(url, f"run_rank:{record}")}
            for name, record in (
                ("data_wait", "prepwatch_data_wait_seconds:per_step_rate5m"),
                ("collective_wait", "prepwatch_collective_wait_seconds:per_step_rate5m"),
                ("own_compute", "prepwatch_step_duration_seconds:own_compute_per_step_rate5m"),
            )
        }
        # the dashboard queries that need DDP ranks draw one row per rank of these jobs
        from test_dashboard_queries import DDP_ONLY, queries, substitute

        ddp_rows = {key: {m["metric"].get("rank") for m in _query(url, substitute(expr))}
                    for key, expr in queries() if key in DDP_ONLY}
    finally:
        for proc in reversed(procs):
            proc.stop(signal.SIGTERM)

    with capsys.disabled():
        print(f"\n[e2e distributed] every expected alert firing {fired_after:.0f} s after "
              f"Prometheus started; seconds per step {per_step}")
    assert EXPECTED <= firing
    findings = diagnose(window)
    stragglers = {(f.scope["run"], f.key, f.scope["rank"]) for f in findings if f.family == "straggler"}
    assert stragglers == EXPECTED_FINDINGS, [f.verdict for f in findings]
    assert ddp_rows and all(rows >= {"0", "1", "2"} for rows in ddp_rows.values()), ddp_rows
    assert not {f for f in firing if f[0] == "healthy"}, firing  # nothing at all on healthy
    wrong_rank = {f for f in firing if f[1] in RANK_ALERTS} - EXPECTED
    assert not wrong_rank, f"rank comparison alerts on the wrong rank or case: {wrong_rank}"
    # only the rank whose input is slow is input-bound in the slow-collate case
    assert {f for f in firing if f[0] == "slowcollate" and f[1].startswith("PrepwatchInputBound")
            and f[2] != "2"} == set(), firing
