"""One job, one run label, however it is started (issue 13 item 4).

Two real jobs that name themselves with ``prepwatch.start(run=...)``, each with 2 real
DataLoader workers: one under ``prepwatch run`` (whose command would name it
``train_loop``), one reporting to a shared ``prepwatch agent``. One real Prometheus scrapes
both agents; the documented queries of docs/sources.md must return each job under the
run it gave itself, and no series may carry the command's name.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import yaml
from e2e_stack import READY_TIMEOUT_S, ROOT, Proc, free_port, http_get, need, wait_until

pytestmark = pytest.mark.e2e

JOB = str(ROOT / "tests" / "jobs" / "train_loop.py")
WORKER_CPU_PER_WORKER = (
    'sum by (run) (rate(prepwatch_process_cpu_seconds_total{role="workers"}[1m]))\n'
    "  / sum by (run) (prepwatch_dataloader_workers)"
)


def _query(prom_url: str, expr: str) -> list[dict]:
    import json
    import urllib.parse

    body = json.loads(http_get(f"{prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_documented_queries_group_each_job_under_its_own_run(tmp_path: Path) -> None:
    prometheus = need("prometheus")
    assert WORKER_CPU_PER_WORKER in (ROOT / "docs" / "sources.md").read_text()  # as documented
    ports = {name: free_port() for name in ("prometheus", "run", "agent")}
    logs = tmp_path / "logs"
    logs.mkdir()
    state = tmp_path / "agent-state"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PREPWATCH_RUN", None)
    env.pop("PREPWATCH_AGENT_DIR", None)
    cli = [sys.executable, "-m", "prepwatch.cli.main"]
    job = [sys.executable, JOB, "--workers", "2", "--seconds", "300"]
    procs: list[Proc] = []
    try:
        procs.append(Proc("under-run", [*cli, "run", "--port", str(ports["run"]), "--",
                                        *job, "--run", "my-cnn"], logs, env=env))
        agent = Proc("agent", [*cli, "agent", "--port", str(ports["agent"]),
                               "--state-dir", str(state)], logs, env=env)
        procs.append(agent)
        wait_until(lambda: agent.alive() and http_get(f"http://127.0.0.1:{ports['agent']}/metrics")
                   is not None, READY_TIMEOUT_S, "the node agent")
        procs.append(Proc("under-agent", [*job, "--run", "other-cnn"], logs,
                          env=dict(env, PREPWATCH_AGENT_DIR=str(state))))
        for mode in ("run", "agent"):
            wait_until(lambda m=mode: b"prepwatch_dataloader_workers{" in http_get(
                f"http://127.0.0.1:{ports[m]}/metrics"), 90, f"the job under `prepwatch {mode}`")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": "prepwatch", "static_configs": [{"targets": [
                f"127.0.0.1:{ports['run']}", f"127.0.0.1:{ports['agent']}"]}]}],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom = Proc("prometheus", [
            prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}", "--log.level=warn",
        ], logs)
        procs.append(prom)
        prom_url = f"http://127.0.0.1:{ports['prometheus']}"
        wait_until(lambda: prom.alive() and http_get(f"{prom_url}/-/ready") is not None,
                   READY_TIMEOUT_S, "Prometheus ready")

        def per_worker() -> dict[str, float]:
            return {r["metric"].get("run", ""): float(r["value"][1])
                    for r in _query(prom_url, WORKER_CPU_PER_WORKER)}

        try:
            wait_until(lambda: set(per_worker()) == {"my-cnn", "other-cnn"}, 90,
                       "worker CPU per worker for both runs")
        except TimeoutError:
            raise AssertionError(
                f"{per_worker()}; worker CPU series: "
                f"{_query(prom_url, 'prepwatch_process_cpu_seconds_total')}\n"
                + "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in procs)) from None
        assert all(math.isfinite(v) and v >= 0 for v in per_worker().values())

        # Every series with a run, from either agent, says the job's run: the command's
        # name (train_loop) labels nothing.
        every = _query(prom_url, 'count by (run) ({__name__=~"prepwatch_.+"})')
        runs = {r["metric"].get("run") for r in every}
        assert runs - {None} == {"my-cnn", "other-cnn"}, runs
        # under `prepwatch run` the agent's node-level series belong to the job ...
        host = _query(prom_url, "prepwatch_host_cpus")
        by_target = {r["metric"]["instance"]: r["metric"].get("run") for r in host}
        assert by_target[f"127.0.0.1:{ports['run']}"] == "my-cnn", by_target
        # ... under a shared node agent they are the node's, and only the ranks' series say run
        assert by_target[f"127.0.0.1:{ports['agent']}"] is None, by_target
        ranks = _query(prom_url, 'prepwatch_processes{role="main"}')
        assert {(r["metric"].get("run"), r["metric"].get("rank")) for r in ranks} == {
            ("my-cnn", "0"), ("other-cnn", "0")}, ranks
    finally:
        for proc in reversed(procs):
            proc.stop()
