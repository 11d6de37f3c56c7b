"""bench/gpu_check.py on a machine without a GPU: every GPU check says SKIP and why, the
script exits 0, and ``--quick`` runs the same training-loop code on the CPU with every
component reporting steps (so the loop itself is proven before a GPU is ever lent)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.py"
NO_CUDA = "no CUDA device (torch.cuda.is_available() is False)"
COMPONENTS = ("loader", "class_health", "inputs", "boxes", "clips")

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="with CUDA the script runs the real GPU checks (minutes)"
)


def run_script(*args: str, timeout: float) -> tuple[int, list[str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.returncode, lines


def verdicts(lines: list[str]) -> dict[str, tuple[str, str]]:
    out = {}
    for line in lines:
        m = re.match(r"^(PASS|FAIL|SKIP) ([\w.]+): (.*)$", line)
        if m:
            out[m.group(2)] = (m.group(1), m.group(3))
    return out


def assert_gpu_checks_skipped(got: dict[str, tuple[str, str]]) -> None:
    assert got["tests.gpu"][0] == "SKIP" and got["tests.gpu"][1].startswith(NO_CUDA)
    for name in ("sync", "sync.clips_cuda", "overhead"):
        assert got[name] == ("SKIP", NO_CUDA), got[name]
    for name in ("nvml.access", "nvml.busy", "nvml.memory", "nvml.uuid"):
        status, text = got[name]
        assert status == "SKIP", (name, text)
        assert text.startswith("NVML not available (") or text == NO_CUDA, text
    assert not [n for n, (status, _) in got.items() if status == "FAIL"], got


def test_without_cuda_every_gpu_check_skips_with_its_reason_and_exits_0():
    _, lines = run_script(timeout=180)
    got = verdicts(lines)
    assert_gpu_checks_skipped(got)
    assert not [n for n in got if n.startswith("cpu.")]  # the CPU loop only with --quick
    assert re.search(r"^# gpu_check: 0 pass, 0 fail, \d+ skip", lines[-1]), lines[-1]


def test_quick_runs_the_loop_code_on_cpu_with_every_component_reporting_steps():
    _, lines = run_script("--quick", timeout=300)
    got = verdicts(lines)
    assert_gpu_checks_skipped(got)
    status, text = got["cpu.loop.loop"]
    steps = re.match(r"(\d+) train \+ (\d+) eval \+ (\d+) guarded steps", text)
    assert status == "PASS" and steps and int(steps.group(1)) >= 8, text
    for name in (*COMPONENTS, "inputs_guard"):
        status, text = got[f"cpu.loop.{name}"]
        m = re.match(r"(\d+) calls, metric \+([\d.e+]+)", text)
        assert status == "PASS" and m, (name, text)
        assert int(m.group(1)) > 0 and float(m.group(2)) > 0, (name, text)
    for name in COMPONENTS:
        status, text = got[f"cpu.overhead.{name}"]
        assert status == "PASS" and re.search(r"ms bare, x\d+\.\d+ with " + name, text), text
    assert got["cpu.overhead.pin_memory"][0] == "SKIP"
