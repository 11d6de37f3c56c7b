"""The real NVML path: no driver on this machine (tested for real), a GPU where there is one."""

from __future__ import annotations

import logging
import os
import time

import pytest
from helpers import parse, value, wait_for
from prometheus_client import generate_latest

from prepwatch.context import Context
from prepwatch.identity import Identity
from prepwatch.sources import start_sources
from prepwatch.sources.nvml import Nvml


def _real_nvml_starts() -> bool:
    nvml = Nvml()
    ok = nvml.start()
    nvml.shutdown()
    return ok


HAS_GPU = _real_nvml_starts()


@pytest.mark.skipif(HAS_GPU, reason="this machine has a working NVIDIA driver")
def test_no_driver_for_real_gpu_off_one_log_line_everything_else_on(caplog):
    nvml = Nvml()
    assert nvml.start() is False
    assert "NVML" in (nvml.reason or "")
    ctx = Context.create(Identity(run="t"))
    with caplog.at_level(logging.INFO, logger="prepwatch"):
        loops = start_sources(ctx, pids=lambda: [os.getpid()], interval=0.05)
        try:
            wait_for(lambda: loops[0].ticks >= 3, timeout=20, every=0.02)
            s = parse(generate_latest(ctx.registry).decode())
        finally:
            for loop in loops:
                loop.close()
    assert value(s, "prepwatch_gpu_available") == 0.0
    assert not [n for (n, _) in s if n.startswith("prepwatch_gpu_") and n != "prepwatch_gpu_available"]
    gpu_lines = [r for r in caplog.records if "GPU" in r.getMessage()]
    assert len(gpu_lines) == 1, [r.getMessage() for r in gpu_lines]
    # Everything else keeps working.
    assert value(s, "prepwatch_process_cpu_seconds_total", role="main") > 0
    assert value(s, "prepwatch_process_resident_memory_bytes", role="main") > 10e6
    assert value(s, "prepwatch_host_cpu_seconds_total", mode="idle") > 0
    assert value(s, "prepwatch_internal_errors_total", component="gpu") == 0
    assert not loops[0]._thread.is_alive()


def test_sampler_thread_stops_promptly_and_rejects_bad_interval():
    ctx = Context.create(Identity(run="t"))
    with pytest.raises(ValueError, match="interval"):
        start_sources(ctx, pids=lambda: [os.getpid()], interval=0)
    with pytest.raises(TypeError, match="callable"):
        start_sources(ctx, pids=[os.getpid()], interval=1.0)  # type: ignore[arg-type]
    (loop,) = start_sources(ctx, pids=lambda: [os.getpid()], interval=30.0, gpu=False)
    wait_for(lambda: loop.ticks >= 1, timeout=20, every=0.02)
    t0 = time.monotonic()
    loop.close()
    assert time.monotonic() - t0 < 2.0  # not waiting out the 30 s interval
    assert not loop._thread.is_alive()
    loop.close()  # twice is fine


def test_a_failing_source_is_counted_and_the_others_go_on():
    from prepwatch.sources import SamplerLoop

    ctx = Context.create(Identity(run="t"))
    calls = []

    class Broken:
        name = "broken"

        def sample(self) -> None:
            raise RuntimeError("bug")

        def close(self) -> None:
            pass

    class Fine(Broken):
        name = "fine"

        def sample(self) -> None:
            calls.append(1)

    loop = SamplerLoop([Broken(), Fine()], 1.0, ctx.errors.report)
    for _ in range(3):
        loop.tick()
    assert len(calls) == 3
    assert ctx.errors.count("broken") == 3


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a real NVIDIA GPU and driver")
def test_real_gpu_busy_seconds_follow_a_kernel():  # pragma: no cover - GPU machines only
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    ctx = Context.create(Identity(run="t"))
    (loop,) = start_sources(ctx, pids=lambda: [os.getpid()], interval=0.5)
    try:
        x = torch.randn(4096, 4096, device="cuda")
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            x = x @ x
            x = x / x.norm()
        torch.cuda.synchronize()
        time.sleep(1.0)
        s = parse(generate_latest(ctx.registry).decode())
    finally:
        loop.close()
    assert value(s, "prepwatch_gpu_available") == 1.0
    assert value(s, "prepwatch_gpu_busy_seconds_total") > 2.0
    assert value(s, "prepwatch_gpu_memory_used_bytes") > 64e6
    assert value(s, "prepwatch_gpu_memory_total_bytes") > 1e9
