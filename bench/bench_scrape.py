"""Scrape cost of a full job and its growth over 100 epochs of restarted workers.

A "full job": 1000 classes x 2 splits of class health, a DataLoader with 8 workers
restarted every epoch (persistent_workers=False), 8 GPUs' worth of GPU series (through
the fake NVML seam of the test suite: no GPU here), host and process-tree series. Scraped
over real HTTP, both from the process' own endpoint and through the node agent, with
class health's training counts changed between scrapes (as its flush every 10 s does).

    python bench/bench_scrape.py [--quick]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import prepwatch  # noqa: E402
from prepwatch.exporter.rank_link import RankLink  # noqa: E402
from prepwatch.sources import start_sources  # noqa: E402


def _scrape_ms(url: str, n: int = 7) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        body = urllib.request.urlopen(url).read()
        times.append(time.perf_counter() - t0)
        size = len(body.splitlines())
    return statistics.median(times) * 1e3, size


def _paired_ms(direct: str, agent: str, between, n: int = 41) -> tuple[float, float]:
    """Median scrape times of both endpoints, taken in alternation so that both see the
    same machine (a busy machine's load moves both, not their ratio). ``between`` runs
    before every scrape, untimed, as training runs between two scrapes of a job (the first
    render after it is the slower: measured so, neither endpoint gets a warm one)."""
    a, b = [], []
    for _ in range(n):
        between()
        a.append(_scrape_ms(direct, 1)[0])
        between()
        b.append(_scrape_ms(agent, 1)[0])
    return statistics.median(a), statistics.median(b)


class _AgentProcess:
    """The node agent in a process of its own, as `prepwatch agent` runs beside the job
    (its own GIL and core); without GPU/host sources, so that both endpoints serve the same
    series."""

    CODE = ("import sys; from prepwatch.agent.agent import Agent; "
            "a = Agent(sys.argv[1], port=0, run='bench', sources=False); "
            "print(a.url, flush=True); sys.stdin.read(); a.close()")

    def __init__(self, state: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE, str(state)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            raise RuntimeError("the agent process did not start")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)
        self.proc.stdout.close()


def run(quick: bool = False) -> dict:
    from datasets import TensorPairs
    from test_sources_gpu import FakeNvmlSeam

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*worker processes in total.*")  # 8 on 2 cores: on purpose
    prepwatch.stop()
    watch = prepwatch.start(run="bench", port=0, sources=False)
    seam = FakeNvmlSeam(8)
    for gpu in range(8):
        seam.feed(gpu, 0, 5.0, 90)
    samplers = start_sources(watch.ctx, pids=lambda: [os.getpid()], interval=1.0, nvml_lib=seam)
    health = watch.class_health(num_classes=1000)
    for _ in range(20):
        health.train_predictions(torch.randint(0, 1000, (256,)), torch.randint(0, 1000, (256,)))
        health.eval_predictions(torch.randint(0, 1000, (256,)), torch.randint(0, 1000, (256,)))
    health.flush()
    state = Path(tempfile.mkdtemp(prefix="prepwatch-bench-"))
    agent = _AgentProcess(state)
    link = RankLink(state, watch.ctx.registry, {"run": "bench", "rank": 0, "pid": os.getpid()},
                    watch.ctx.errors.report)
    dl = DataLoader(TensorPairs(16), batch_size=2, num_workers=8, persistent_workers=False)
    loader = watch.loader(dl)
    time.sleep(1.5)  # one sampler tick
    try:
        for _ in loader:
            pass
        first_direct, lines = _scrape_ms(watch.url)
        first_agent, agent_lines = _scrape_ms(agent.url)
        epochs = 20 if quick else 100
        t0 = time.perf_counter()
        for _ in range(epochs - 1):
            for _ in loader:
                pass
        epoch_s = (time.perf_counter() - t0) / (epochs - 1)
        _, lines_after = _scrape_ms(watch.url, 1)

        def training_steps() -> None:  # class health's training split flushes between scrapes
            health.train_predictions(torch.randint(0, 1000, (256,)), torch.randint(0, 1000, (256,)))
            health.flush()
        last_direct, last_agent = _paired_ms(watch.url, agent.url, training_steps)
    finally:
        link.close()
        agent.close()
        for s in samplers:
            s.close()
        prepwatch.stop()
    return {
        "series_lines": lines, "series_lines_after_epochs": lines_after, "agent_lines": agent_lines,
        "epochs": epochs, "epoch_with_8_worker_restarts_s": epoch_s,
        "scrape_ms_direct_epoch1": first_direct, "scrape_ms_direct_last": last_direct,
        "scrape_ms_agent_epoch1": first_agent, "scrape_ms_agent_last": last_agent,
        "agent_vs_direct_last": last_agent / last_direct,
    }


if __name__ == "__main__":
    for k, v in run("--quick" in sys.argv).items():
        print(f"{k:<34} {v:.2f}" if isinstance(v, float) else f"{k:<34} {v}")
