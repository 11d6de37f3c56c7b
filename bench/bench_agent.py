"""Agent footprint: RSS and CPU of `prepwatch agent` sampling at 1 Hz while a job reports to it
and Prometheus-like scrapes arrive every second; and time to first batch with/without prepwatch.

    python bench/bench_agent.py
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "tests" / "jobs" / "train_loop.py"


def agent_footprint(seconds: float = 30.0) -> dict:
    state = tempfile.mkdtemp(prefix="prepwatch-bench-")
    agent = subprocess.Popen(
        [sys.executable, "-m", "prepwatch.cli.main", "agent", "--port", "0", "--state-dir", state,
         "--interval", "1"], stderr=subprocess.PIPE, text=True,
    )
    job = None
    try:
        url = next(m.group(1) for line in agent.stderr
                   if (m := re.search(r"(http://\S+/metrics)", line)))
        env = dict(os.environ, PREPWATCH_AGENT_DIR=state, PREPWATCH_RUN="bench")
        job = subprocess.Popen([sys.executable, str(JOB), "--seconds", str(seconds + 30), "--workers", "2"],
                               env=env)
        time.sleep(8)  # job start-up
        proc = psutil.Process(agent.pid)
        cpu0 = sum(proc.cpu_times()[:2])
        t0 = time.monotonic()
        scrape_s = []
        while time.monotonic() - t0 < seconds:
            s0 = time.perf_counter()
            urllib.request.urlopen(url).read()
            scrape_s.append(time.perf_counter() - s0)
            time.sleep(1.0)
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        return {
            "agent_cpu_share_of_one_core": cpu / (time.monotonic() - t0),
            "agent_rss_mb": proc.memory_info().rss / 2**20,
            "scrape_p50_ms": statistics.median(scrape_s) * 1e3,
        }
    finally:
        for p in (job, agent):
            if p is not None:
                p.terminate()
                p.wait()
        agent.stderr.close()


def first_batch(rounds: int = 5) -> dict:
    code = r"""
import sys, time, torch
sys.path.insert(0, TESTS_DIR)
from torch.utils.data import DataLoader
from datasets import TensorPairs
torch.set_num_threads(1)
wrap = sys.argv[1] == "1"
dl = DataLoader(TensorPairs(256), batch_size=64, num_workers=2)
if wrap:
    import prepwatch
    t0 = time.perf_counter()
    it = prepwatch.start(port=0, sources=False).loader(dl)
else:
    t0 = time.perf_counter()
    it = dl
next(iter(it))
print(time.perf_counter() - t0)
""".replace("TESTS_DIR", repr(str(ROOT / "tests")))
    times = {"0": [], "1": []}
    for i in range(rounds * 2):
        flag = "01"[i % 2]
        out = subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True, check=True)
        times[flag].append(float(out.stdout.strip().splitlines()[-1]))
    bare, wrapped = statistics.median(times["0"]), statistics.median(times["1"])
    return {"bare_s": bare, "with_prepwatch_s": wrapped, "added_s": wrapped - bare}


def run(quick: bool = False) -> dict:
    return {
        "agent": agent_footprint(10 if quick else 30),
        "time_to_first_batch": first_batch(3 if quick else 5),
    }


if __name__ == "__main__":
    for k, v in run("--quick" in sys.argv).items():
        print(k, {kk: round(vv, 4) for kk, vv in v.items()})
