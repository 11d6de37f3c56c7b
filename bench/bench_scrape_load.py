"""Training speed while 50 scrapers hammer an endpoint (issue 12, item 5).

Rounds of three phases of ``--seconds`` each, one training process (a small CPU model fed through
``watch.loader``, 100-class class health, its own endpoint) and one idle twin process with
the same metrics:

* quiet: nobody scrapes;
* at training: 50 concurrent scrapers (one process, 50 threads, back to back, 5 s timeout)
  scrape the training process' endpoint;
* at other: the same load scrapes the idle twin instead (the cost of the load itself on a
  shared machine, not of prepwatch in the training process).

Reports the median training steps/s of each phase, the slowdowns, scrape rate, p99 and
timeouts. ``--compare TREE`` measures another source tree (the code before a change) in
the same run, interleaved round by round, so a busy machine's drift hits both alike.

    python bench/bench_scrape_load.py [--seconds 10] [--rounds 3] [--compare /tmp/main-tree]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent("""
    import sys, time, torch
    import prepwatch
    torch.set_num_threads(1)
    port, train = int(sys.argv[1]), sys.argv[2] == "train"
    w = prepwatch.start(run="load", port=port, sources=False)
    health = w.class_health(num_classes=100)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 100))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    data = [(torch.randn(64, 256), torch.randint(0, 100, (64,))) for _ in range(32)]
    print("ready", flush=True)
    steps, last = 0, time.monotonic()
    while True:
        if not train:
            time.sleep(1)
            continue
        for x, y in w.loader(data):
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            opt.zero_grad(); loss.backward(); opt.step()
            health.train_predictions(out.detach(), y)
            steps += 1
            now = time.monotonic()
            if now - last >= 1.0:
                print(f"{now:.3f} {steps}", flush=True)
                last = now
""")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(port: int, role: str, code: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(code))
    # cwd too: `python -c` puts the working directory first on sys.path.
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(port), role], env=env, cwd=str(code),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


class Progress:
    """Reads the training process' (time, steps) lines as they come."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.points: list[tuple[float, int]] = []
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            t, n = line.split()
            self.points.append((float(t), int(n)))

    def rate(self, t0: float, t1: float) -> float:
        inside = [(t, n) for t, n in self.points if t0 <= t <= t1]
        (ta, na), (tb, nb) = inside[0], inside[-1]
        return (nb - na) / (tb - ta)


def _load(url: str, scrapers: int, seconds: float) -> dict:
    lat: list[float] = []
    timeouts = errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def scrape() -> None:
        nonlocal timeouts, errors
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                urllib.request.urlopen(url, timeout=5).read()
                with lock:
                    lat.append(time.perf_counter() - t0)
            except socket.timeout:
                with lock:
                    timeouts += 1
            except Exception as exc:
                with lock:
                    errors += 1
                    if "timed out" in str(exc):
                        timeouts += 1
    threads = [threading.Thread(target=scrape) for _ in range(scrapers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()
    return {"scrapes": len(lat), "p50_ms": lat[len(lat) // 2] * 1e3 if lat else None,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1e3 if lat else None,
            "timeouts": timeouts, "errors": errors}


class Setup:
    """One code tree: a training process and its idle twin (the training one is stopped
    with SIGSTOP while another setup is measured, so two never compete)."""

    def __init__(self, name: str, code: Path) -> None:
        self.name = name
        self.p_train, self.p_other = _port(), _port()
        self.train = _start(self.p_train, "train", code)
        self.other = _start(self.p_other, "idle", code)
        self.progress = Progress(self.train)
        self.train.send_signal(signal.SIGSTOP)

    def close(self) -> None:
        for proc in (self.train, self.other):
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()


def run(seconds: float = 10.0, scrapers: int = 50, rounds: int = 3,
        compare: Path | None = None, quick: bool = False) -> dict:
    """``rounds`` x (quiet, at training, at other) of ``seconds`` each, per code tree,
    interleaved so that a change of the machine's load hits every phase alike."""
    rounds = 1 if quick else rounds
    setups = [Setup("this", ROOT)] + ([Setup("compare", compare)] if compare else [])
    rates: dict = {s.name: {"quiet": [], "at_training": [], "at_other": []} for s in setups}
    loads: dict = {s.name: {"at_training": [], "at_other": []} for s in setups}
    try:
        for _ in range(rounds):
            for setup in setups:
                setup.train.send_signal(signal.SIGCONT)
                time.sleep(2)  # back to speed
                for phase, port in (("quiet", None), ("at_training", setup.p_train),
                                    ("at_other", setup.p_other)):
                    t0 = time.monotonic()
                    if port is None:
                        time.sleep(seconds)
                    else:
                        loads[setup.name][phase].append(
                            _load(f"http://127.0.0.1:{port}/metrics", scrapers, seconds))
                    rates[setup.name][phase].append(setup.progress.rate(t0 + 1, time.monotonic()))
                    time.sleep(1)
                setup.train.send_signal(signal.SIGSTOP)
        out: dict = {}
        for setup in setups:
            r = {phase: statistics.median(v) for phase, v in rates[setup.name].items()}
            out[setup.name] = {
                "steps_per_s": {k: round(v, 1) for k, v in r.items()},
                "slowdown_pct": {k: round(100 * (1 - r[k] / r["quiet"]), 1)
                                 for k in ("at_training", "at_other")},
                "scrapes": {k: {"per_s": round(sum(x["scrapes"] for x in v) / (seconds * rounds), 1),
                                "p99_ms": round(max(x["p99_ms"] or 0 for x in v)),
                                "timeouts": sum(x["timeouts"] for x in v),
                                "errors": sum(x["errors"] for x in v)}
                            for k, v in loads[setup.name].items()},
            }
        return out
    finally:
        for setup in setups:
            setup.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="per phase")
    ap.add_argument("--scrapers", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compare", type=Path, default=None,
                    help="another source tree (e.g. `git worktree`/`git archive` of main) to "
                         "measure in the same run, interleaved")
    args = ap.parse_args()
    print(json.dumps(run(args.seconds, args.scrapers, args.rounds, args.compare), indent=2))


if __name__ == "__main__":
    main()
