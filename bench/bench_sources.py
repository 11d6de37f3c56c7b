"""Cost of the sources: GPU + host sampling at 1 Hz, and IO instrumentation per open.

    python bench/bench_sources.py        # prints a table; run() returns the numbers

What is measured, in one process:

* sampling: CPU time (``time.thread_time``) of one tick of each sampler, over many
  ticks, with 4 real child processes as "workers" and the descendants rescan at its
  production period (every 10th tick at 1 Hz). The GPU part runs through
  ``FakeNvmlSeam`` (no GPU here): it measures prepwatch's own work per GPU, not the
  NVML driver calls, whose cost is the driver's.
* loop stall: the longest gap seen by a busy Python loop on the main thread while the
  samplers tick at 20 Hz in their thread, against the same loop alone.
* IO: the per-open cost of ``timed_open`` and of the open hook, against a bare
  ``open``, measured alternately in rounds (bare, timed, hooked, bare, ...) so drift
  in machine load hits all of them alike; plus the instrumentation alone, with the
  real open replaced by a function that returns at once: open+close, and a whole file
  (``with`` open, one read, close), the path every sample of a small-file dataset
  takes (budget 2 us for each). IO figures are CPU time of
  the measuring thread (``time.thread_time``: user + system, so the syscall counts,
  preemption by other load does not).
"""

from __future__ import annotations

import builtins
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prepwatch.context import Context  # noqa: E402
from prepwatch.hooks import open_hook as pw_io  # noqa: E402
from prepwatch.hooks.worker_recorder import ROW, Recorder  # noqa: E402
from prepwatch.identity import Identity  # noqa: E402
from prepwatch.sources import SamplerLoop  # noqa: E402
from prepwatch.sources.gpu import GpuSampler  # noqa: E402
from prepwatch.sources.host import HostSampler, ProcessSampler, ProcessTree  # noqa: E402
from prepwatch.sources.nvml import Nvml  # noqa: E402

GPUS = 8
WORKERS = 4
TICKS = 100


class FakeNvmlSeam:
    """pynvml stand-in for the benchmark: answers at once, 6 new samples per GPU per call."""

    def __init__(self, n: int) -> None:
        self.handles = list(range(n))
        self.ts = [0] * n

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int:
        return len(self.handles)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-bench-{h}"

    def nvmlDeviceGetName(self, h: int) -> str:
        return "Bench GPU"

    def nvmlDeviceGetSamples(self, h: int, kind: int, since: int) -> Any:
        out = []
        for _ in range(6):
            self.ts[h] += 166_667
            out.append(SimpleNamespace(timeStamp=self.ts[h], sampleValue=SimpleNamespace(uiVal=90)))
        return 1, out

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=90, memory=10)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(used=1e9, total=80e9, free=79e9)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return 300_000

    def nvmlDeviceGetTemperature(self, h: int, s: int) -> int:
        return 60

    def nvmlDeviceGetClockInfo(self, h: int, c: int) -> int:
        return 1980

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        return [SimpleNamespace(pid=os.getpid())]


def _sleeper(stop: Any) -> None:
    stop.wait(120)


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _cpu_per_tick(sample: Any, clock: _Clock, ticks: int) -> float:
    sample()  # warm: first ticks set up state
    start = time.thread_time()
    for _ in range(ticks):
        clock.t += 1.0  # 1 Hz: the rescan happens every 10th tick, as in production
        sample()
    return (time.thread_time() - start) / ticks


def bench_sampling(ticks: int = TICKS) -> dict[str, float]:
    ctx = Context.create(Identity(run="bench"))
    clock = _Clock()
    tree = ProcessTree(lambda: [os.getpid()], clock=clock)
    process = ProcessSampler(ctx, tree)
    host = HostSampler(ctx)
    gpu = GpuSampler(ctx, job_pids=tree.job_pids, nvml=Nvml(FakeNvmlSeam(GPUS)), clock=clock)
    fork = mp.get_context("fork")
    stop = fork.Event()
    kids = [fork.Process(target=_sleeper, args=(stop,)) for _ in range(WORKERS)]
    for k in kids:
        k.start()
    try:
        out = {
            "process_us": 1e6 * _cpu_per_tick(process.sample, clock, ticks),
            "host_us": 1e6 * _cpu_per_tick(host.sample, clock, ticks),
            "gpu_fake_us": 1e6 * _cpu_per_tick(gpu.sample, clock, ticks),
            "workers": float(WORKERS),
            "gpus": float(GPUS),
            "rescans": float(tree.scans),
        }
        out["stall"] = bench_stall([process, host, gpu])
    finally:
        stop.set()
        for k in kids:
            k.join(10)
    total = out["process_us"] + out["host_us"] + out["gpu_fake_us"]
    out["total_us"] = total
    out["core_share_at_1hz"] = total * 1e-6  # seconds of CPU per second
    return out


def _max_gap(seconds: float) -> tuple[float, float]:
    clock = time.perf_counter
    gaps = []
    end = clock() + seconds
    last = clock()
    x = 0
    while last < end:
        for _ in range(50):  # a little Python work per iteration, like a loop body
            x += 1
        now = clock()
        gaps.append(now - last)
        last = now
    a = np.asarray(gaps)
    return float(np.percentile(a, 99.9)), float(a.max())


def bench_stall(sources: list[Any], seconds: float = 2.0) -> dict[str, float]:
    alone = _max_gap(seconds)
    ctx = Context.create(Identity(run="bench"))
    loop = SamplerLoop(sources, 0.05, ctx.errors.report).start()
    try:
        with_sampler = _max_gap(seconds)
    finally:
        loop._stop.set()
        loop._thread.join(5)
    return {
        "alone_p999_us": alone[0] * 1e6, "alone_max_us": alone[1] * 1e6,
        "sampling_p999_us": with_sampler[0] * 1e6, "sampling_max_us": with_sampler[1] * 1e6,
        "sampling_ticks": float(loop.ticks),
    }


def bench_io(rounds: int = 21, per_round: int = 2000) -> dict[str, float]:
    # CPU time of this thread (user + system, so the open syscall counts): time spent
    # preempted by other load on a shared machine is left out, which wall time is not.
    cpu = time.thread_time
    rec = Recorder(np.zeros(ROW))
    saved_recorder, saved_bare = pw_io._recorder, pw_io._bare_open
    pw_io._recorder = lambda: rec
    fd, path = tempfile.mkstemp(prefix="prepwatch-bench-")
    os.write(fd, b"x" * 4096)
    os.close(fd)
    bare = saved_bare
    timed = pw_io.timed_open
    try:
        def bare_round() -> float:
            t0 = cpu()
            for _ in range(per_round):
                bare(path, "rb").close()
            return (cpu() - t0) / per_round

        def timed_round() -> float:
            t0 = cpu()
            for _ in range(per_round):
                timed(path, "rb").close()
            return (cpu() - t0) / per_round

        def hooked_round() -> float:
            with pw_io.instrument_open():
                hooked = builtins.open
                t0 = cpu()
                for _ in range(per_round):
                    hooked(path, "rb").close()
                return (cpu() - t0) / per_round

        def bare_read_round() -> float:
            t0 = cpu()
            for _ in range(per_round):
                with bare(path, "rb") as f:
                    f.read()
            return (cpu() - t0) / per_round

        def hooked_read_round() -> float:  # a whole small-file sample: open, read, close
            with pw_io.instrument_open():
                hooked = builtins.open
                t0 = cpu()
                for _ in range(per_round):
                    with hooked(path, "rb") as f:
                        f.read()
                return (cpu() - t0) / per_round

        results: dict[str, list[float]] = {
            "bare": [], "timed": [], "hooked": [], "bare_read": [], "hooked_read": [],
        }
        for _ in range(rounds):  # alternate, so load drift hits all alike
            results["bare"].append(bare_round())
            results["timed"].append(timed_round())
            results["hooked"].append(hooked_round())
            results["bare_read"].append(bare_read_round())
            results["hooked_read"].append(hooked_read_round())
        med = {k: statistics.median(v) for k, v in results.items()}

        # The instrumentation alone: the real open swapped for one that returns at once.
        data = b"x" * 4096

        class Dummy:
            def close(self) -> None: ...

            def read(self, size: Any = -1) -> bytes:
                return data

            def __enter__(self) -> Dummy:
                return self

            def __exit__(self, *exc: Any) -> None:
                self.close()

        dummy = Dummy()

        def instant(*args: Any, **kwargs: Any) -> Dummy:
            return dummy

        pw_io._bare_open = instant
        n = 20_000
        alone: dict[str, list[float]] = {
            "bare": [], "timed": [], "hooked": [], "bare_file": [], "timed_file": [],
            "hooked_file": [],
        }

        def open_close(op: Any) -> float:
            t0 = cpu()
            for _ in range(n):
                op(path, "rb").close()
            return (cpu() - t0) / n

        def whole_file(op: Any) -> float:  # open, one read, close: a small-file sample
            t0 = cpu()
            for _ in range(n):
                with op(path, "rb") as f:
                    f.read()
            return (cpu() - t0) / n

        for _ in range(15):
            alone["bare"].append(open_close(instant))
            alone["timed"].append(open_close(timed))
            alone["bare_file"].append(whole_file(instant))
            alone["timed_file"].append(whole_file(timed))
            with pw_io.instrument_open():
                alone["hooked"].append(open_close(builtins.open))
                alone["hooked_file"].append(whole_file(builtins.open))
        # Fixed CPU work: noise from other load only adds, so the fastest round is the estimate.
        iso = {k: min(v) for k, v in alone.items()}
        # Hook installed but prepwatch not active in the process (recorder None).
        pw_io._recorder = lambda: None
        with pw_io.instrument_open():
            hooked = builtins.open
            t0 = cpu()
            for _ in range(n):
                hooked(path, "rb").close()
            inactive = (cpu() - t0) / n
        inactive_overhead = inactive - iso["bare"]
    finally:
        pw_io._recorder, pw_io._bare_open = saved_recorder, saved_bare
        os.unlink(path)
    return {
        "bare_open_us": med["bare"] * 1e6,
        "timed_open_us": med["timed"] * 1e6,
        "hooked_open_us": med["hooked"] * 1e6,
        "timed_overhead_us": (med["timed"] - med["bare"]) * 1e6,
        "hooked_overhead_us": (med["hooked"] - med["bare"]) * 1e6,
        "timed_overhead_isolated_us": (iso["timed"] - iso["bare"]) * 1e6,
        "hooked_overhead_isolated_us": (iso["hooked"] - iso["bare"]) * 1e6,
        "timed_file_overhead_isolated_us": (iso["timed_file"] - iso["bare_file"]) * 1e6,
        "hooked_file_overhead_isolated_us": (iso["hooked_file"] - iso["bare_file"]) * 1e6,
        "hook_inactive_overhead_us": inactive_overhead * 1e6,
        "bare_read_us": med["bare_read"] * 1e6,
        "hooked_read_us": med["hooked_read"] * 1e6,
        "hooked_read_overhead_us": (med["hooked_read"] - med["bare_read"]) * 1e6,
    }


def run() -> dict:
    """All measurements; keys are stable for tests and the README."""
    return {"sampling": bench_sampling(), "io": bench_io()}


def main() -> None:
    if "--io" in sys.argv[1:]:  # only the per-open figures
        print_io(bench_io())
        return
    r = run()
    s, io_ = r["sampling"], r["io"]
    st = s["stall"]
    print(f"GPU + host sampling, CPU per tick ({int(s['workers'])} worker processes, "
          f"{int(s['gpus'])} GPUs through FakeNvmlSeam: prepwatch's work, not NVML's)")
    print(f"  process tree   {s['process_us']:8.0f} us")
    print(f"  host           {s['host_us']:8.0f} us")
    print(f"  gpu (fake)     {s['gpu_fake_us']:8.0f} us")
    share = 100 * s["core_share_at_1hz"]
    print(f"  total          {s['total_us']:8.0f} us  = {share:.3f}% of one core at 1 Hz  (budget 1%)")
    print(f"loop gaps on the main thread (p99.9 / max): alone {st['alone_p999_us']:.0f} / "
          f"{st['alone_max_us']:.0f} us; with sampling at 20 Hz {st['sampling_p999_us']:.0f} / "
          f"{st['sampling_max_us']:.0f} us ({int(st['sampling_ticks'])} ticks)")
    print_io(io_)


def print_io(io_: dict[str, float]) -> None:
    print("file open, per open (median of alternating rounds)")
    print(f"  bare open+close   {io_['bare_open_us']:6.2f} us")
    print(f"  timed_open        {io_['timed_open_us']:6.2f} us  (+{io_['timed_overhead_us']:.2f})")
    print(f"  hooked open       {io_['hooked_open_us']:6.2f} us  (+{io_['hooked_overhead_us']:.2f})")
    print(f"  instrumentation alone (fastest round), open+close: timed_open "
          f"+{io_['timed_overhead_isolated_us']:.2f} us, hook +{io_['hooked_overhead_isolated_us']:.2f} us; "
          f"open+read+close: timed_open +{io_['timed_file_overhead_isolated_us']:.2f} us, "
          f"hook +{io_['hooked_file_overhead_isolated_us']:.2f} us (budget 2 us per file)")
    print(f"  hook installed, prepwatch inactive: +{io_['hook_inactive_overhead_us']:.2f} us")
    print(f"  open+read 4 KiB+close: bare {io_['bare_read_us']:.2f} us, hooked "
          f"{io_['hooked_read_us']:.2f} us (+{io_['hooked_read_overhead_us']:.2f}; per-file "
          "read time and bytes recorded at close)")


if __name__ == "__main__":
    main()
