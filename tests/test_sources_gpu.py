"""GPU sampler logic against FakeNvmlSeam, a small stand-in for the pynvml module.

There is no NVIDIA driver on CI machines. The sampler talks to NVML only through
prepwatch.sources.nvml.Nvml, which takes the binding as a constructor argument; the
fake below implements the dozen pynvml functions it calls, raising pynvml's real
NVMLError classes. The real-driver path is tests/test_sources_nvml.py (absent driver
here; a ``gpu``-marked test where one exists).
"""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pynvml
import pytest
from helpers import parse, value
from prometheus_client import generate_latest

from prepwatch.context import Context
from prepwatch.identity import Identity
from prepwatch.sources.gpu import GpuSampler
from prepwatch.sources.nvml import Nvml

PERIOD_US = 166_667  # NVML's usual 1/6 s utilization sample period


class FakeGpu:
    def __init__(self, index: int) -> None:
        self.index = index
        self.uuid = f"GPU-fake-{index}"
        self.samples: list[tuple[int, float]] = []
        self.rate = 0.0
        self.memory = (2e9, 80e9)
        self.power_mw = 250_000
        self.temp = 61
        self.sm_mhz = 1410
        self.pids: set[int] = set()
        self.fail: dict[str, Exception] = {}
        self.calls: dict[str, int] = {}


class FakeNvmlSeam:
    """The pynvml functions prepwatch calls, backed by scripted per-GPU state."""

    def __init__(self, n: int = 1, *, init_error: Exception | None = None) -> None:
        self.gpus = [FakeGpu(i) for i in range(n)]
        self.init_error = init_error
        self.shutdowns = 0

    # helpers for tests
    def feed(self, gpu: int, start_us: int, seconds: float, pct: float) -> int:
        """Append samples every PERIOD_US from start_us for ``seconds``; return the next ts."""
        ts = start_us
        for _ in range(round(seconds * 1e6 / PERIOD_US)):
            ts += PERIOD_US
            self.gpus[gpu].samples.append((ts, pct))
        return ts

    def _gpu(self, handle: FakeGpu, name: str) -> FakeGpu:
        handle.calls[name] = handle.calls.get(name, 0) + 1
        if name in handle.fail:
            raise handle.fail[name]
        return handle

    # pynvml surface
    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        return self.gpus[i]

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return self._gpu(h, "uuid").uuid

    def nvmlDeviceGetName(self, h: FakeGpu) -> bytes:
        return b"Fake H100"

    def nvmlDeviceGetSamples(self, h: FakeGpu, kind: int, since: int):
        assert kind == pynvml.NVML_GPU_UTILIZATION_SAMPLES
        g = self._gpu(h, "samples")
        new = [
            SimpleNamespace(timeStamp=ts, sampleValue=SimpleNamespace(uiVal=int(p)))
            for ts, p in g.samples if ts > since
        ]
        if not new:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, new

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu):
        return SimpleNamespace(gpu=self._gpu(h, "rates").rate, memory=0)

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu):
        used, total = self._gpu(h, "memory").memory
        return SimpleNamespace(used=used, total=total, free=total - used)

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        return self._gpu(h, "power").power_mw

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int) -> int:
        return self._gpu(h, "temp").temp

    def nvmlDeviceGetClockInfo(self, h: FakeGpu, clock: int) -> int:
        return self._gpu(h, "clock").sm_mhz

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeGpu):
        return [SimpleNamespace(pid=p, usedGpuMemory=1) for p in self._gpu(h, "procs").pids]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(seam: FakeNvmlSeam, pids: set[int] | None = None, clock: Clock | None = None):
    ctx = Context.create(Identity(run="t"))
    sampler = GpuSampler(
        ctx, job_pids=(lambda: set(pids or ())), nvml=Nvml(seam, on_error=ctx.errors.report),
        clock=clock or Clock(),
    )
    return ctx, sampler


def scrape(ctx: Context) -> dict:
    return parse(generate_latest(ctx.registry).decode())


def busy(ctx: Context, gpu: str = "0") -> float:
    return value(scrape(ctx), "prepwatch_gpu_busy_seconds_total", gpu=gpu)


def test_intermittent_drop_between_scrapes_is_kept_in_busy_seconds():
    seam = FakeNvmlSeam(1)
    ts = seam.feed(0, 0, 2.0, 95)  # before the sampler starts: not the job's time
    ctx, sampler = make(seam)
    sampler.sample()  # first drain: sets the starting point only
    assert busy(ctx) == 0.0
    # Between two 15 s scrapes: 95% for 6 s, a 2 s drop to 40%, 95% again for 7 s,
    # drained by a 1 Hz sampler. A utilization point read at each scrape sees 95% twice.
    for pct, seconds in ((95, 6.0), (40, 2.0), (95, 7.0)):
        for _ in range(int(seconds)):
            ts = seam.feed(0, ts, 1.0, pct)
            sampler.sample()
    expected = 0.95 * 13 + 0.40 * 2
    assert busy(ctx) == pytest.approx(expected, rel=1e-3)
    assert busy(ctx) / 15.0 == pytest.approx(0.8767, abs=1e-3)  # rate() over the window
    samples = scrape(ctx)
    ratio = value(samples, "prepwatch_gpu_utilization_ratio", gpu="0", uuid="GPU-fake-0")
    assert ratio == pytest.approx(0.95)
    assert value(samples, "prepwatch_gpu_info", sampling="samples", model="Fake H100") == 1.0
    assert value(samples, "prepwatch_gpu_available") == 1.0


def test_drop_shorter_than_the_interval_is_counted_exactly():
    seam = FakeNvmlSeam(1)
    ctx, sampler = make(seam)
    ts = seam.feed(0, 0, 1.0, 95)
    sampler.sample()
    ts = seam.feed(0, ts, 0.5, 95)
    ts = seam.feed(0, ts, 0.5, 10)  # half a second at 10%, invisible to a 1 Hz point reader
    sampler.sample()
    assert busy(ctx) == pytest.approx(0.5 * 0.95 + 0.5 * 0.10, rel=1e-3)
    assert value(scrape(ctx), "prepwatch_gpu_utilization_ratio") == pytest.approx(0.525, rel=1e-3)


def test_silent_buffer_is_idle_and_the_first_sample_after_counts_one_period():
    seam = FakeNvmlSeam(1)
    ctx, sampler = make(seam)
    ts = seam.feed(0, 0, 1.0, 50)
    sampler.sample()
    before = busy(ctx)
    for _ in range(30):  # an idle GPU's buffer runs dry: NVML answers NOT_FOUND
        sampler.sample()
    assert busy(ctx) == before
    seam.feed(0, ts + 30_000_000, 1.0 / 6, 90)  # one sample, 30 s after the last
    sampler.sample()
    assert busy(ctx) - before == pytest.approx(0.9 * PERIOD_US / 1e6, rel=1e-3)


def test_out_of_range_samples_are_skipped_and_logged_once(caplog):
    seam = FakeNvmlSeam(1)
    ctx, sampler = make(seam)
    ts = seam.feed(0, 0, 1.0, 50)
    sampler.sample()
    with caplog.at_level(logging.INFO, logger="prepwatch"):
        ts = seam.feed(0, ts, 1.0, 80)
        seam.gpus[0].samples[-1] = (ts, 808_334_905)  # garbage NVML has been seen to return
        sampler.sample()
        ts = seam.feed(0, ts, 1.0, 80)
        seam.gpus[0].samples[-1] = (ts, 4_294_967_295)
        sampler.sample()
    assert busy(ctx) == pytest.approx(0.8 * 10 * PERIOD_US / 1e6, rel=1e-3)
    assert sum("out-of-range" in r.message for r in caplog.records) == 1


def test_falls_back_to_utilization_rates_and_says_so(caplog):
    seam = FakeNvmlSeam(1)
    seam.gpus[0].fail["samples"] = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    clock = Clock()
    ctx, sampler = make(seam, clock=clock)
    with caplog.at_level(logging.INFO, logger="prepwatch"):
        for pct in (70, 70, 20, 20, 90):
            seam.gpus[0].rate = pct
            sampler.sample()
            clock.t += 1.0
    # One point per tick, held over the interval to the next: 4 intervals after the first.
    assert busy(ctx) == pytest.approx(0.70 + 0.20 + 0.20 + 0.90)
    samples = scrape(ctx)
    assert value(samples, "prepwatch_gpu_info", sampling="utilization_rates") == 1.0
    assert value(samples, "prepwatch_gpu_info", sampling="samples") is None
    assert value(samples, "prepwatch_gpu_utilization_ratio") == pytest.approx(0.9)
    assert sum("no NVML utilization sample buffer" in r.message for r in caplog.records) == 1
    assert seam.gpus[0].calls["samples"] == 1  # not asked again
    assert ctx.errors.count("gpu") == 0  # unsupported is not a fault


def test_only_the_gpus_the_job_uses_are_exported():
    seam = FakeNvmlSeam(3)
    pids = {4242}
    ctx, sampler = make(seam, pids=pids)
    sampler.sample()
    # Nobody holds a context yet: NVML cannot tell, so every GPU is watched.
    assert {lab for (n, lab) in scrape(ctx) if n == "prepwatch_gpu_memory_used_bytes"} == {
        (("gpu", str(i)), ("uuid", f"GPU-fake-{i}")) for i in range(3)
    }
    seam.gpus[1].pids = {4242, 1}
    seam.gpus[2].pids = {999}  # another job's process
    sampler._next_select = 0.0
    sampler.sample()
    gpus = {dict(lab)["gpu"] for (n, lab) in scrape(ctx) if n.startswith("prepwatch_gpu_") and lab}
    assert gpus == {"1"}
    # Sticky: the job's process leaving GPU 1 does not bring the others back.
    seam.gpus[1].pids = set()
    sampler._next_select = 0.0
    sampler.sample()
    gpus = {dict(lab)["gpu"] for (n, lab) in scrape(ctx) if n.startswith("prepwatch_gpu_") and lab}
    assert gpus == {"1"}


def test_all_gpus_when_process_list_is_not_permitted():
    seam = FakeNvmlSeam(2)
    for g in seam.gpus:
        g.fail["procs"] = pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)
    ctx, sampler = make(seam, pids={1})
    sampler.sample()
    gpus = {dict(lab)["gpu"] for (n, lab) in scrape(ctx) if n == "prepwatch_gpu_temperature_celsius"}
    assert gpus == {"0", "1"}
    assert ctx.errors.count("gpu") == 0


def test_errors_mid_run_omit_that_series_count_once_logged_and_recover(caplog):
    seam = FakeNvmlSeam(2)
    seam.gpus[0].fail["power"] = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    ctx, sampler = make(seam)
    ts = [seam.feed(i, 0, 1.0, 60) for i in range(2)]
    sampler.sample()
    s = scrape(ctx)
    assert value(s, "prepwatch_gpu_power_watts", gpu="0") is None  # omitted, never a fake 0
    assert value(s, "prepwatch_gpu_power_watts", gpu="1") == 250.0
    assert value(s, "prepwatch_gpu_sm_clock_hertz", gpu="1") == 1410e6
    assert value(s, "prepwatch_gpu_memory_total_bytes", gpu="1") == 80e9
    lost = pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
    with caplog.at_level(logging.WARNING, logger="prepwatch"):
        for _ in range(3):
            seam.gpus[0].fail["memory"] = lost
            seam.gpus[0].fail["samples"] = lost
            seam.gpus[0].fail["rates"] = lost
            ts = [seam.feed(i, ts[i], 1.0, 60) for i in range(2)]
            sampler.sample()
    s = scrape(ctx)
    assert value(s, "prepwatch_gpu_memory_used_bytes", gpu="0") is None
    assert value(s, "prepwatch_gpu_utilization_ratio", gpu="0") is None
    assert value(s, "prepwatch_gpu_memory_used_bytes", gpu="1") == 2e9
    assert busy(ctx, "1") == pytest.approx(0.6 * 3, rel=1e-3)  # the healthy GPU went on
    assert ctx.errors.count("gpu") >= 3
    assert sum("GPU is lost" in r.getMessage() for r in caplog.records) == 1  # logged once
    # The driver recovers: values come back, the busy counter resumes from the buffer.
    seam.gpus[0].fail.clear()
    seam.gpus[0].fail["power"] = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    before = busy(ctx, "0")
    seam.feed(0, ts[0], 1.0, 60)
    sampler.sample()
    assert value(scrape(ctx), "prepwatch_gpu_memory_used_bytes", gpu="0") == 2e9
    assert busy(ctx, "0") > before
    assert seam.gpus[0].calls["power"] == 1  # unsupported: asked once


def test_no_driver_through_the_seam_means_available_zero_and_nothing_else(caplog):
    seam = FakeNvmlSeam(1, init_error=pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    ctx, sampler = make(seam)
    with caplog.at_level(logging.INFO, logger="prepwatch"):
        for _ in range(3):
            sampler.sample()
    s = scrape(ctx)
    assert value(s, "prepwatch_gpu_available") == 0.0
    assert not [n for (n, _) in s if n.startswith("prepwatch_gpu_") and n != "prepwatch_gpu_available"]
    lines = [r for r in caplog.records if "no GPU metrics" in r.message]
    assert len(lines) == 1 and "Driver Not Loaded" in lines[0].message
    sampler.close()
    assert seam.shutdowns == 0  # never initialised, nothing to shut down


def test_zero_gpus_is_unavailable():
    ctx, sampler = make(FakeNvmlSeam(0))
    sampler.sample()
    assert value(scrape(ctx), "prepwatch_gpu_available") == 0.0


def test_close_shuts_nvml_down_once():
    seam = FakeNvmlSeam(1)
    _, sampler = make(seam)
    sampler.sample()
    sampler.close()
    sampler.close()
    assert seam.shutdowns == 1


def test_values_are_in_base_units():
    seam = FakeNvmlSeam(1)
    seam.gpus[0].rate = 37
    ctx, sampler = make(seam)
    sampler.sample()
    s = scrape(ctx)
    assert value(s, "prepwatch_gpu_power_watts") == 250.0  # NVML: milliwatts
    assert value(s, "prepwatch_gpu_sm_clock_hertz") == 1.41e9  # NVML: MHz
    assert value(s, "prepwatch_gpu_temperature_celsius") == 61.0
    ratio = value(s, "prepwatch_gpu_utilization_ratio")  # no samples yet: the current point
    assert ratio == pytest.approx(0.37) and not math.isnan(ratio)
