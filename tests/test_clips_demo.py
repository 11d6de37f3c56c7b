"""`prepwatch demo --fault video`: per-frame colour jitter is flagged on every probed clip."""

from __future__ import annotations

import argparse

import torch
from helpers import scrape, value

from prepwatch.demo import fault_video


def test_fault_video_flags_the_clip_transform(watch, capsys) -> None:
    torch.set_num_threads(1)
    fault_video.main(watch, argparse.Namespace(seconds=4.0, workers=2, seed=0))
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1 and "inconsistent" in out, out
    s = scrape(watch.url)
    bad = value(s, "prepwatch_clips_total", source="probe", outcome="inconsistent")
    good = value(s, "prepwatch_clips_total", source="probe", outcome="consistent")
    assert bad >= 5 and good == 0
    # The jitter histogram's mass sits above the threshold.
    below = value(s, "prepwatch_clip_photometric_jitter_bucket", source="probe", le="0.03")
    assert below == 0


def test_consistent_clip_transform_trains_and_is_not_flagged(watch) -> None:
    """The same job with the jitter drawn once per clip: consistent, and it learns."""
    from prepwatch.demo.geometry_transforms import clip_jitter

    torch.set_num_threads(1)
    monitor = watch.clips(transform=clip_jitter(0.4, 0.4), probe_shape=(8, 64, 64))
    reports = monitor.probe(clips=4)
    assert all(r.consistent for r in reports), reports
    assert isinstance(fault_video.motion_net()(torch.rand(2, 8, 3, 32, 32)), torch.Tensor)
