"""Training speed while 50 scrapers hammer an endpoint (issue 12, item 5).

Three phases of ``--seconds`` each, one training process (a small CPU model fed through
``watch.loader``, 100-class class health, its own endpoint) and one idle twin process with
the same metrics:

* quiet: nobody scrapes;
* at training: 50 concurrent scrapers (one process, 50 threads, back to back, 5 s timeout)
  scrape the training process' endpoint;
* at other: the same load scrapes the idle twin instead (the cost of the load itself on a
  shared machine, not of prepwatch in the training process).

Reports training steps/s in each phase, the slowdowns, scrape p99 and timeouts.

    python bench/bench_scrape_load.py [--seconds 30] [--scrapers 50]

To compare with older code, run this file against that tree (PYTHONPATH decides).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
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


def _start(port: int, role: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(port), role], env=env,
                            stdout=subprocess.PIPE, text=True)
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


def run(seconds: float = 30.0, scrapers: int = 50) -> dict:
    p_train, p_other = _port(), _port()
    train, other = _start(p_train, "train"), _start(p_other, "idle")
    progress = Progress(train)
    try:
        time.sleep(3)  # warm up
        out: dict = {}
        for phase, url in (("quiet", None), ("at_training", p_train), ("at_other", p_other)):
            t0 = time.monotonic()
            if url is None:
                time.sleep(seconds)
                load = None
            else:
                load = _load(f"http://127.0.0.1:{url}/metrics", scrapers, seconds)
            t1 = time.monotonic()
            out[phase] = {"steps_per_s": round(progress.rate(t0 + 1, t1), 1), "scrapes": load}
            time.sleep(2)
        quiet = out["quiet"]["steps_per_s"]
        for phase in ("at_training", "at_other"):
            out[phase]["slowdown_pct"] = round(100 * (1 - out[phase]["steps_per_s"] / quiet), 1)
        return out
    finally:
        for proc in (train, other):
            proc.kill()
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--scrapers", type=int, default=50)
    args = ap.parse_args()
    print(json.dumps(run(args.seconds, args.scrapers), indent=2))


if __name__ == "__main__":
    main()
