"""Agent footprint at 8 ranks, for sizing a node (docs/deploy.md): the agent's CPU and RSS
while 8 real training processes (one DataLoader worker each) report to it and a
Prometheus-like client scrapes every 15 s (the PodMonitor's interval) and every 1 s (worst
case); the series one scrape returns, split into per-rank and per-node.

    python bench/bench_agent_ranks.py [--ranks 8] [--seconds 60]
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(ROOT / "tests"))
from helpers import parse  # noqa: E402

JOB = ROOT / "tests" / "jobs" / "train_loop.py"


def _window(proc: psutil.Process, url: str, seconds: float, every: float) -> dict:
    cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
    scrape_s, rss = [], []
    while time.monotonic() - t0 < seconds:
        s0 = time.perf_counter()
        urllib.request.urlopen(url, timeout=10).read()
        scrape_s.append(time.perf_counter() - s0)
        rss.append(proc.memory_info().rss)
        time.sleep(max(0.0, every - (time.perf_counter() - s0)))
    return {
        "agent_cpu_share_of_one_core": (sum(proc.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0),
        "agent_rss_mb_max": max(rss) / 2**20,
        "scrape_p50_ms": statistics.median(scrape_s) * 1e3,
        "scrapes": len(scrape_s),
    }


def run(ranks: int = 8, seconds: float = 60.0) -> dict:
    state = tempfile.mkdtemp(prefix="prepwatch-bench-")
    agent = subprocess.Popen(
        [sys.executable, "-m", "prepwatch.cli.main", "agent", "--port", "0", "--state-dir", state,
         "--interval", "1"], stderr=subprocess.PIPE, text=True,
    )
    jobs: list[subprocess.Popen] = []
    try:
        url = next(m.group(1) for line in agent.stderr
                   if (m := re.search(r"(http://\S+/metrics)", line)))
        for rank in range(ranks):
            env = dict(os.environ, PREPWATCH_AGENT_DIR=state, PREPWATCH_RUN="bench", RANK=str(rank),
                       LOCAL_RANK=str(rank), WORLD_SIZE=str(ranks), OMP_NUM_THREADS="1")
            jobs.append(subprocess.Popen(
                [sys.executable, str(JOB), "--seconds", str(3 * seconds + 120), "--workers", "1"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 120
        while True:  # every rank registered and past its first steps
            samples = parse(urllib.request.urlopen(url, timeout=10).read().decode())
            steps = [v for (n, lab), v in samples.items() if n == "prepwatch_steps_total"]
            if len(steps) == ranks and min(steps) > 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(steps)} of {ranks} ranks stepping after 120 s")
            time.sleep(1.0)
        proc = psutil.Process(agent.pid)
        out = {"ranks": ranks,
               "every_15s": _window(proc, url, seconds, 15.0),
               "every_1s": _window(proc, url, seconds / 2, 1.0)}
        samples = parse(urllib.request.urlopen(url, timeout=10).read().decode())
        per_rank = sum(1 for _, lab in samples if "rank" in dict(lab))
        out["series_total"] = len(samples)
        out["series_per_rank"] = per_rank / ranks
        out["series_node_level"] = len(samples) - per_rank
        return out
    finally:
        for p in (*jobs, agent):
            p.terminate()
        for p in (*jobs, agent):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        agent.stderr.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    a = ap.parse_args()
    for k, v in run(a.ranks, a.seconds).items():
        print(k, {kk: round(vv, 4) for kk, vv in v.items()} if isinstance(v, dict) else v)
