"""ClipMonitor: stream observations, transform probes, metrics and failure paths."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from helpers import parse
from prometheus_client import generate_latest

from prepwatch.checks.clips.monitor import ClipMonitor
from prepwatch.checks.clips.synthetic import brightness_ramp, moving_object_clip
from prepwatch.context import Context
from prepwatch.demo.geometry_transforms import clip_jitter
from prepwatch.identity import Identity
from prepwatch.watch import Watch

torch.set_num_threads(1)


def ctx() -> Context:
    return Context.create(Identity(run="job", rank=0))


def samples(c: Context) -> dict:
    return parse(generate_latest(c.registry).decode())


def val(s: dict, name: str, **labels: str) -> float:
    return s[(name, tuple(sorted(labels.items())))]


def clips(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.stack([
        moving_object_clip(rng, 8, 32, 32, gains=brightness_ramp(8, 1.0, 0.6)) for _ in range(n)
    ])


def test_series_are_pre_created() -> None:
    c = ctx()
    ClipMonitor(c)
    s = samples(c)
    for source in ("stream", "probe"):
        for outcome in ("consistent", "inconsistent", "skipped"):
            assert val(s, "prepwatch_clips_total", source=source, outcome=outcome) == 0
        assert val(s, "prepwatch_clip_photometric_jitter_count", source=source) == 0
    assert val(s, "prepwatch_clip_jitter_threshold") == 0.03


def test_observe_counts_consistent_and_inconsistent_batches() -> None:
    c = ctx()
    monitor = ClipMonitor(c, sample_every=1, max_clips=2, budget=1.0)
    raw = clips(3)
    torch.manual_seed(0)
    good = torch.stack([clip_jitter(0.3, 0.3)(x) for x in raw])
    bad = torch.stack([clip_jitter(0.3, 0.3, per_frame=True)(x) for x in raw])
    monitor.observe(raw, good)   # (N, T, C, H, W): 2 of 3 clips measured
    assert monitor.flush()       # measured on the background thread
    monitor.observe(raw, bad)
    assert monitor.flush()
    monitor.observe(raw[0], raw[0])  # one (T, C, H, W) clip, untouched
    assert monitor.flush()
    s = samples(c)
    assert val(s, "prepwatch_clips_total", source="stream", outcome="consistent") == 3
    assert val(s, "prepwatch_clips_total", source="stream", outcome="inconsistent") == 2
    assert val(s, "prepwatch_clip_photometric_jitter_count", source="stream") == 5
    # The two bad clips sit above the threshold bucket, the good ones below it.
    assert val(s, "prepwatch_clip_photometric_jitter_bucket", source="stream", le="0.03") == 3


def test_probe_of_the_transform() -> None:
    c = ctx()
    good = ClipMonitor(c, transform=clip_jitter(0.4, 0.4), probe_shape=(8, 48, 48))
    reports = good.probe(clips=3)
    assert [r.consistent for r in reports] == [True] * 3
    c2 = ctx()
    bad = ClipMonitor(c2, transform=clip_jitter(0.4, 0.4, per_frame=True), probe_shape=(8, 48, 48))
    reports = bad.probe(clips=3)
    assert [r.consistent for r in reports] == [False] * 3
    s = samples(c2)
    assert val(s, "prepwatch_clips_total", source="probe", outcome="inconsistent") == 3


def test_step_drives_the_probe_cadence_and_keeps_the_job_rng() -> None:
    c = ctx()
    monitor = ClipMonitor(c, transform=clip_jitter(0.4, 0.4), probe_every=4, budget=1.0,
                          probe_shape=(4, 32, 32))
    torch.manual_seed(1)
    expected = torch.rand(4)
    torch.manual_seed(1)
    for _ in range(12):
        monitor.step()
        assert monitor.flush()  # a probe is skipped while the thread still measures one
    assert torch.equal(torch.rand(4), expected)
    s = samples(c)
    probed = sum(val(s, "prepwatch_clips_total", source="probe", outcome=o)
                 for o in ("consistent", "inconsistent", "skipped"))
    assert probed == 3


def test_failures_are_counted_never_raised(caplog) -> None:
    def broken(clip):
        raise RuntimeError("decoder fell over")

    c = ctx()
    monitor = ClipMonitor(c, transform=broken, probe_every=1, budget=1.0, sample_every=1)
    with caplog.at_level(logging.WARNING, logger="prepwatch"):
        monitor.step()
        monitor.observe(torch.rand(8, 3, 16, 16), torch.rand(4, 3, 16, 16))  # frame mismatch
        assert monitor.flush()  # (no probe while the thread measured the observation)
        monitor.step()
        assert monitor.flush()
    assert c.errors.count("clips") == 3  # two probes, one bad observation


def test_setup_errors() -> None:
    c = ctx()
    with pytest.raises(ValueError, match="threshold"):
        ClipMonitor(c, threshold=2.0)
    with pytest.raises(ValueError, match="probe_shape"):
        ClipMonitor(c, probe_shape=(1, 32, 32))
    with pytest.raises(TypeError, match="callable"):
        ClipMonitor(c, transform="jitter")  # type: ignore[arg-type]


def test_watch_clips_component() -> None:
    c = ctx()
    watch = Watch(c, None, None)
    monitor = watch.clips(threshold=0.05)
    assert monitor is watch.clips() and monitor.threshold == 0.05
    watch.stop()
