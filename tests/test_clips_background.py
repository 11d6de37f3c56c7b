"""Clip checks off the step path: measured on a background thread with one torch thread,
crop location by FFT correlation that matches direct convolution."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from helpers import parse
from prometheus_client import generate_latest

from prepwatch.checks.clips import ClipMonitor
from prepwatch.checks.clips.locate import _Image
from prepwatch.checks.clips.synthetic import moving_object_clip
from prepwatch.context import Context


def _seconds(ctx: Context) -> dict[str, float]:
    got = parse(generate_latest(ctx.registry).decode())
    return {dict(lab)["part"]: v for (n, lab), v in got.items()
            if n == "prepwatch_clip_check_seconds_total"}


def test_observe_hands_the_measurement_to_a_thread_and_keeps_the_loop_threads() -> None:
    threads = torch.get_num_threads()
    ctx = Context.create()
    monitor = ClipMonitor(ctx, sample_every=1, budget=1.0)
    rng = np.random.default_rng(0)
    raw = torch.stack([moving_object_clip(rng, 8, 64, 64) for _ in range(2)])
    aug = (raw * 1.2).clamp(0, 1)
    monitor.observe(raw, aug)
    assert monitor.flush(60.0)
    seconds = _seconds(ctx)
    assert seconds["measure"] > 0  # measured, on the thread
    assert seconds["observe"] < seconds["measure"]  # the loop paid the copy, not the fit
    got = parse(generate_latest(ctx.registry).decode())
    consistent = [v for (n, lab), v in got.items() if n == "prepwatch_clips_total"
                  and dict(lab) == {"source": "stream", "outcome": "consistent"}]
    assert consistent == [2.0]
    assert torch.get_num_threads() == threads  # the thread's limit is its own
    monitor.close()


def test_fft_correlation_matches_direct_convolution() -> None:
    g = torch.Generator().manual_seed(0)
    image = _Image(torch.rand(1, 1, 48, 64, generator=g))
    templates = torch.rand(4, 1, 20, 30, generator=g)
    t = templates - templates.mean(dim=(-2, -1), keepdim=True)
    direct = F.conv2d(image.image, t)[0]
    assert torch.allclose(image._correlate(t, 0, 0, 48, 64), direct, atol=1e-4)
    window = F.conv2d(image.image[..., 5:40, 7:60], t)[0]
    assert torch.allclose(image._correlate(t, 5, 7, 40, 60), window, atol=1e-4)
