"""CLI options the deployment paths rely on.

* `prepwatch run` names the run from --run, else $PREPWATCH_RUN (what Kubernetes' Downward
  API and `prepwatch slurm run` set), else the command; the job sees the same name.
* `prepwatch agent --no-process-tree` (the node DaemonSet, whose ranks live in other PID
  namespaces) serves the ranks but samples no process by their pids.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import free_port, scrape, value, wait_for

ROOT = Path(__file__).resolve().parents[1]
SHOW = [sys.executable, "-c", "import os; print('job sees', os.environ['PREPWATCH_RUN'])"]


@pytest.mark.parametrize("env_run,flag,expected", [
    ("resnet50", [], "resnet50"),
    ("resnet50", ["--run", "flagged"], "flagged"),
    (None, [], "python"),
])
def test_run_name_precedence(env_run, flag, expected) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREPWATCH_RUN"}
    env["PYTHONPATH"] = str(ROOT)
    if env_run:
        env["PREPWATCH_RUN"] = env_run
    res = subprocess.run(
        [sys.executable, "-m", "prepwatch.cli.main", "run", "--port", str(free_port()), *flag, "--", *SHOW],
        env=env, capture_output=True, text=True, timeout=60, cwd=str(ROOT),
    )
    assert res.returncode == 0, res.stderr
    assert f"serving run {expected!r}" in res.stderr
    assert f"job sees {expected}" in res.stdout


@pytest.mark.parametrize("flag,mains", [([], 1.0), (["--no-process-tree"], 0.0)])
def test_agent_process_tree_switch(tmp_path: Path, flag: list[str], mains: float) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "PREPWATCH_RUN")}
    env["PYTHONPATH"] = str(ROOT)
    port = free_port()
    state = tmp_path / "state"
    agent = subprocess.Popen(
        [sys.executable, "-m", "prepwatch.cli.main", "agent", "--state-dir", str(state),
         "--port", str(port), *flag], env=env, cwd=str(ROOT), stderr=subprocess.DEVNULL,
    )
    rank = None
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_for(lambda: (state / "ranks").is_dir() and scrape(url), 60)
        rank = subprocess.Popen([sys.executable, str(ROOT / "tests" / "jobs" / "tiny_rank.py")],
                                env=dict(env, PREPWATCH_AGENT_DIR=str(state), PREPWATCH_RUN="pt"),
                                stdout=subprocess.DEVNULL)
        # served either way; the process tree follows the flag (sampled at 1 Hz)
        wait_for(lambda: (value(scrape(url), "prepwatch_steps_total", run="pt") or 0) > 0, 60)
        wait_for(lambda: value(scrape(url), "prepwatch_processes", role="main") == mains, 30)
        if mains == 0.0:  # and stays so over several 1 Hz samples, not a sample still to come
            until = time.monotonic() + 4
            while time.monotonic() < until:
                assert value(scrape(url), "prepwatch_processes", role="main") == 0.0
                time.sleep(0.5)
    finally:
        for proc in (rank, agent):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
