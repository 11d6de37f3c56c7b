"""Cost of the clip consistency check, under the conditions a job has.

    python bench/bench_clips.py [--quick]

Measures, in one process, on generated 8-frame clips (3x112x112 float, the moving-object
clips the tests use; ``cropped``: the augmentation also crops, so the region is located
first, moments mode):

- the **first** measurement in the process (imports, BLAS/LAPACK start-up) and the
  median of the following ones;
- with torch's and numpy's default thread counts, and with one torch intra-op thread and
  one BLAS thread (what the monitor's background thread sets for itself);
- **alone**, and with **other threads busy** (two threads doing torch matmuls, as a
  training loop and a data loader thread keep the cores busy);
- what a sampled ``observe`` costs the training loop: before (the measurement ran in
  the call) and now (host copies handed to the background thread).

Figures are wall time in ms; the machine's load moves them, so docs/clips.md quotes a
run together with its conditions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prepwatch.checks.clips import ClipMonitor  # noqa: E402
from prepwatch.checks.clips.consistency import clip_consistency  # noqa: E402
from prepwatch.checks.clips.synthetic import moving_object_clip  # noqa: E402
from prepwatch.context import Context  # noqa: E402


def clips(seed: int, cropped: bool) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    raw = moving_object_clip(rng, 8, 112, 112)
    gain = torch.tensor(1.2)
    aug = (raw * gain).clamp(0, 1)
    if cropped:
        aug = torch.nn.functional.interpolate(aug[..., 8:104, 10:106], size=(112, 112),
                                              mode="bilinear", align_corners=False)
    return raw, aug


class Busy:
    """Two threads keeping the cores busy with torch matmuls (a loop and a loader)."""

    def __init__(self, threads: int = 2) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(threads)]

    def _work(self) -> None:
        a = torch.randn(256, 256)
        while not self._stop.is_set():
            a = torch.tanh(a @ a.T / 256.0)

    def __enter__(self) -> Busy:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def blas(limit: int | None) -> Any:
    import contextlib

    if limit is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=limit, user_api="blas")


def measure(cropped: bool, repeats: int, limit: int | None) -> tuple[float, float]:
    """(first, median) ms of clip_consistency on a thread of its own; ``limit`` 1: one
    torch and one BLAS thread there (what the monitor's thread does), None: defaults."""
    times: list[float] = []
    inputs = [clips(i, cropped) for i in range(repeats + 1)]

    def work() -> None:
        if limit is not None:
            torch.set_num_threads(limit)
        with blas(limit):
            for raw, aug in inputs:
                t0 = time.perf_counter()
                clip_consistency(raw, aug)
                times.append((time.perf_counter() - t0) * 1e3)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return times[0], statistics.median(times[1:])


def loop_cost(repeats: int) -> tuple[float, float]:
    """ms the loop pays for one sampled observe of a (2, 8, 3, 112, 112) batch: before
    (measured in the call, what ``check`` still does) and now (copy + hand-over)."""
    raw, aug = clips(0, False)
    raw_b, aug_b = torch.stack([raw, raw]), torch.stack([aug, aug])
    sync, async_ = [], []
    for _ in range(repeats):
        m = ClipMonitor(Context.create(), sample_every=1, budget=1.0)
        t0 = time.perf_counter()
        m.check(raw_b, aug_b)
        sync.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        m.observe(raw_b, aug_b)
        async_.append((time.perf_counter() - t0) * 1e3)
        m.flush()
        m.close()
    return statistics.median(sync), statistics.median(async_)


def run(repeats: int) -> dict[str, Any]:
    torch.set_num_threads(2)
    out: dict[str, Any] = {}
    first_ever = None
    for busy in (False, True):
        ctx: Callable[[], Any] = Busy if busy else (lambda: __import__("contextlib").nullcontext())
        with ctx():
            for cropped in (False, True):
                for limit in (None, 1):
                    first, med = measure(cropped, repeats, limit)
                    if first_ever is None:
                        first_ever = first
                    out[(busy, cropped, limit)] = (first, med)
            out[("loop", busy)] = loop_cost(max(3, repeats // 2))
    out["first_in_process"] = first_ever
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    r = run(5 if args.quick else 15)
    print(f"first measurement in the process: {r['first_in_process']:.0f} ms")
    print("| conditions | clip | torch/BLAS threads | first ms | median ms |")
    print("| --- | --- | --- | --- | --- |")
    for busy in (False, True):
        for cropped in (False, True):
            for limit in (None, 1):
                first, med = r[(busy, cropped, limit)]
                print(f"| {'2 threads busy' if busy else 'alone'} | "
                      f"{'cropped (located)' if cropped else 'pixel'} | "
                      f"{'default' if limit is None else 1} | {first:.0f} | {med:.0f} |")
    for busy in (False, True):
        sync, async_ = r[("loop", busy)]
        print(f"loop cost of a sampled observe (2 clips), {'2 threads busy' if busy else 'alone'}: "
              f"before {sync:.1f} ms (measured in the call), now {async_:.2f} ms (copy + hand-over)")


if __name__ == "__main__":
    main()
