"""The Slurm path, simulated on one host: 2 nodes x 2 ranks, a real Prometheus on file_sd.

Each "node" is `prepwatch slurm node` with Slurm's environment for that node (the part
`prepwatch slurm run` starts on every node through srun); its ranks are tiny processes
with SLURM_PROCID/SLURM_LOCALID/SLURM_NTASKS and the node agent's PREPWATCH_AGENT_DIR.
Both agents are given the same base port, so the second one also shows the fallback to
the next free port (two jobs sharing a node). Prometheus discovers them only through the
target files the agents write; the test asserts, through its HTTP API, that every rank is
there with the right run/rank/node/slurm_job_id labels, and that a node whose agent stops
disappears from discovery. `prepwatch slurm run` itself is tested with an `srun` stand-in
on PATH that starts its command once, like srun on a one-node allocation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import free_port, require_binary, wait_for

ROOT = Path(__file__).resolve().parents[1]
RANK_JOB = ROOT / "tests" / "jobs" / "tiny_rank.py"
JOB_ID = "4242"
RUN = "resnet-4242"
pytestmark = pytest.mark.e2e

LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "PREPWATCH_AGENT_DIR",
                 "PREPWATCH_RUN", "PREPWATCH_PORT")


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCHER_VARS and not k.startswith(("SLURM", "OMPI_", "PMI_"))}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", SLURM_JOB_ID=JOB_ID,
               SLURM_JOB_NUM_NODES="2", SLURM_NTASKS="4")
    return env


class Procs:
    """Every process the test starts, stopped by pid at the end (logs kept for failures)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen]] = []
        self._logs: list = []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("wb")
        self._logs.append(log)
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
        self.started.append((name, proc))
        return proc

    def tails(self) -> str:
        return "\n".join(
            f"--- {name}\n" + (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
            for name, _ in self.started
        )

    def stop_all(self) -> None:
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.started:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for log in self._logs:
            log.close()


@pytest.fixture
def procs(tmp_path: Path):
    logs = tmp_path / "logs"
    logs.mkdir()
    p = Procs(logs)
    try:
        yield p
    except BaseException:
        print(p.tails(), file=sys.stderr)
        raise
    finally:
        p.stop_all()


def start_prometheus(procs: Procs, work: Path, sd_dir: Path) -> str:
    """Prometheus on the shipped deploy/slurm/prometheus.yml: its scrape job, file_sd and
    rule files, with the test's folder, 1 s intervals and no remote store."""
    prometheus = require_binary("prometheus")
    port = free_port()
    config = yaml.safe_load((ROOT / "deploy" / "slurm" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ROOT / "alerts" / "*.rules.yml")]
    (job,) = config["scrape_configs"]
    job["file_sd_configs"] = [{"files": [str(sd_dir / "*.json")], "refresh_interval": "2s"}]
    del config["remote_write"]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    procs.start("prometheus", [
        prometheus, f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'prom-data'}", f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ], dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: get(f"{url}/-/ready"), 30)
    return url


def get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:  # e.g. 503 while Prometheus starts: close its body
        exc.close()
        raise


def query(url: str, expr: str) -> list[dict]:
    body = json.loads(get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", body
    return body["data"]["result"]


def start_node(procs: Procs, node: str, sd_dir: Path, state: Path, port: int) -> None:
    env = dict(_base_env(), SLURMD_NODENAME=node, PREPWATCH_RUN=RUN)
    procs.start(f"agent-{node}", [
        sys.executable, "-m", "prepwatch.cli.main", "slurm", "node", "--sd-dir", str(sd_dir),
        "--state-dir", str(state), "--port", str(port), "--interval", "1",
    ], env)
    wait_for(lambda: (sd_dir / f"prepwatch-{JOB_ID}-{node}.json").exists(), 60)


def start_rank(procs: Procs, node: str, state: Path, rank: int, local: int) -> None:
    env = dict(_base_env(), SLURMD_NODENAME=node, PREPWATCH_RUN=RUN, PREPWATCH_AGENT_DIR=str(state),
               SLURM_PROCID=str(rank), SLURM_LOCALID=str(local))
    procs.start(f"rank-{rank}", [sys.executable, str(RANK_JOB)], env)


def test_two_nodes_two_ranks_each_found_through_file_sd(tmp_path: Path, procs: Procs) -> None:
    sd_dir = tmp_path / "file_sd"
    sd_dir.mkdir()
    base = free_port()
    nodes = {"node-a": tmp_path / "a", "node-b": tmp_path / "b"}
    for node, state in nodes.items():
        start_node(procs, node, sd_dir, state, base)

    targets = {}
    for node in nodes:
        (group,) = json.loads((sd_dir / f"prepwatch-{JOB_ID}-{node}.json").read_text())
        assert group["labels"] == {"slurm_job_id": JOB_ID, "node": node}
        (targets[node],) = group["targets"]
    ports = {t.rsplit(":", 1)[1] for t in targets.values()}
    assert len(ports) == 2, f"the second agent on one host must fall back to another port: {targets}"
    assert str(base) in ports

    for rank in range(4):
        node = "node-a" if rank < 2 else "node-b"
        start_rank(procs, node, nodes[node], rank, rank % 2)
    prom = start_prometheus(procs, tmp_path, sd_dir)

    def four_ranks() -> list[dict]:
        found = query(prom, 'prepwatch_steps_total{job="prepwatch-slurm"} > 0')
        return found if len(found) == 4 else []

    try:
        series = wait_for(four_ranks, 180, every=1.0)
    except AssertionError as exc:
        seen_now = query(prom, 'prepwatch_steps_total{job="prepwatch-slurm"}')
        raise AssertionError(f"{exc}\nnow: {seen_now}\n{procs.tails()}") from None
    seen = {(s["metric"]["rank"], s["metric"]["node"]) for s in series}
    assert seen == {("0", "node-a"), ("1", "node-a"), ("2", "node-b"), ("3", "node-b")}
    for s in series:
        m = s["metric"]
        assert m["run"] == RUN and m["slurm_job_id"] == JOB_ID, m
        assert m["instance"] == targets[m["node"]], m
        assert "exported_run" not in m, m
    up = query(prom, 'prepwatch_rank_up{job="prepwatch-slurm"}')
    assert sorted((s["metric"]["rank"], s["value"][1]) for s in up) == [
        (str(r), "1") for r in range(4)
    ]
    # The agents' own series carry the run too, so node-level and rank-level series join.
    assert {s["metric"]["node"] for s in query(prom, f'prepwatch_build_info{{run="{RUN}"}}')} == set(nodes)

    # The fleet recording counts the run's ranks across both nodes, as one series.
    ranks = "namespace_run:prepwatch_last_step_timestamp_seconds:count"
    wait_for(lambda: [s["value"][1] for s in query(prom, ranks)] == ["4"], 30, every=1.0)

    # A node's agent stopping (the job ends there, srun sends SIGTERM) takes its target away.
    (agent_b,) = [p for name, p in procs.started if name == "agent-node-b"]
    agent_b.send_signal(signal.SIGTERM)
    assert agent_b.wait(30) == 0
    assert not (sd_dir / f"prepwatch-{JOB_ID}-node-b.json").exists()

    def only_node_a() -> bool:
        body = json.loads(get(f"{prom}/api/v1/targets"))
        return [t["labels"]["node"] for t in body["data"]["activeTargets"]] == ["node-a"]

    wait_for(only_node_a, 60, every=1.0)


SRUN_STANDIN = textwrap.dedent("""\
    #!/bin/sh
    # srun on a one-node allocation: drop srun's options, run the command once.
    while [ $# -gt 0 ]; do
      case "$1" in --*) shift ;; *) break ;; esac
    done
    exec "$@"
    """)


def test_slurm_run_starts_agents_runs_the_job_and_cleans_up(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(SRUN_STANDIN)
    (bin_dir / "srun").chmod(0o755)
    sd_dir = tmp_path / "file_sd"
    sd_dir.mkdir()
    state = tmp_path / "state"
    seen = tmp_path / "seen.json"
    # The job: records what a rank sees while the agent runs, then runs one real rank.
    job = textwrap.dedent(f"""\
        import json, os, subprocess, sys, pathlib
        sd = sorted(p.name for p in pathlib.Path({str(sd_dir)!r}).glob("*.json"))
        agent_dir = os.environ["PREPWATCH_AGENT_DIR"]
        pathlib.Path({str(seen)!r}).write_text(json.dumps({{
            "agent_dir": os.environ.get("PREPWATCH_AGENT_DIR"), "run": os.environ.get("PREPWATCH_RUN"),
            "targets": sd, "ranks_dir": os.path.isdir(os.path.join(agent_dir, "ranks")),
        }}))
        env = dict(os.environ, SLURM_PROCID="0", SLURM_LOCALID="0")
        sys.exit(subprocess.run([sys.executable, {str(RANK_JOB)!r}, "1"], env=env).returncode + 3)
        """)
    env = dict(_base_env(), SLURM_JOB_NUM_NODES="1", SLURM_NTASKS="1", SLURMD_NODENAME="node-a",
               PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    res = subprocess.run([
        sys.executable, "-m", "prepwatch.cli.main", "slurm", "run", "--sd-dir", str(sd_dir),
        "--state-dir", str(state), "--port", str(free_port()), "--", sys.executable, "-c", job,
    ], env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stdout + res.stderr  # the job's own exit status
    got = json.loads(seen.read_text())
    assert got == {"agent_dir": str(state), "run": f"python-{JOB_ID}",
                   "targets": [f"prepwatch-{JOB_ID}-node-a.json"], "ranks_dir": True}, res.stderr
    assert list(sd_dir.iterdir()) == [], "target files must go with the job"
    assert not state.exists(), "the node agent removes its state directory"


def test_shipped_prometheus_config_is_valid() -> None:
    res = subprocess.run([require_binary("promtool"), "check", "config",
                          str(ROOT / "deploy" / "slurm" / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    n_rules = len(list((ROOT / "alerts").glob("*.rules.yml")))
    assert f"SUCCESS: {n_rules} rule files found" in res.stdout, res.stdout


def test_slurm_run_outside_a_job_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in _base_env().items() if k != "SLURM_JOB_ID"}
    res = subprocess.run([
        sys.executable, "-m", "prepwatch.cli.main", "slurm", "run", "--sd-dir", str(tmp_path),
        "--", "true",
    ], env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "SLURM_JOB_ID is not set" in res.stderr, res.stderr
