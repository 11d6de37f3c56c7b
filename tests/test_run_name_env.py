"""`prepwatch run` names the run from --run, else $PREPWATCH_RUN (what Kubernetes' Downward
API and `prepwatch slurm run` set), else the command; the job sees the same name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import free_port

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
