"""Clip consistency on realistic clips: a panning camera, crops that move nothing, layouts.

A panning camera (a textured scene translated a few pixels per frame) changes what the
whole raw frame holds from frame to frame; a crop applied identically to every frame
must still measure as consistent, and per-frame brightness jitter must still be flagged.
PyTorchVideo-style (C, T, H, W) clips must be read as such, and the default layout must
refuse them plainly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import parse
from prometheus_client import generate_latest

from prepwatch.checks.clips.consistency import DEFAULT_THRESHOLD, clip_consistency
from prepwatch.checks.clips.monitor import ClipMonitor
from prepwatch.checks.clips.synthetic import textured_clip
from prepwatch.context import Context
from prepwatch.identity import Identity
from prepwatch.watch import Watch

torch.set_num_threads(1)
FRAMES, SIDE, OUT = 12, 112, 96
CLIPS = 10


def scene(rng: np.random.Generator, height: int, width: int) -> torch.Tensor:
    """A natural-looking still (3, H, W): 1/f-like luminance field plus flat objects."""
    spectrum = np.fft.fft2(rng.normal(size=(height, width)))
    ky = np.fft.fftfreq(height)[:, None]
    kx = np.fft.fftfreq(width)[None, :]
    img = np.real(np.fft.ifft2(spectrum / (np.sqrt(kx**2 + ky**2) + 1e-2) ** 1.5))
    img = (img - img.min()) / (img.max() - img.min())
    rgb = np.stack([img, img**1.2, img**0.8]) * 0.85  # headroom: brightness x1.1 stays < 1
    for _ in range(6):
        y, x = rng.integers(0, height - 24), rng.integers(0, width - 24)
        rgb[:, y : y + 20, x : x + 20] = rng.uniform(0.05, 0.8, size=(3, 1, 1))
    return torch.tensor(rgb, dtype=torch.float32)


def panning_clip(rng: np.random.Generator, frames: int = FRAMES) -> torch.Tensor:
    """(T, 3, SIDE, SIDE): the camera pans 4-9 pixels a frame across a wide scene."""
    pan = int(rng.integers(4, 10))
    world = scene(rng, SIDE + 24, SIDE + pan * frames)
    return torch.stack([world[:, 12 : 12 + SIDE, t * pan : t * pan + SIDE] for t in range(frames)])


def crop_resize(clip: torch.Tensor, rng: np.random.Generator, *, flip: bool = False) -> torch.Tensor:
    """One crop (70-100% of the side) for every frame of the clip, resized to OUT."""
    side = int(rng.integers(int(0.7 * SIDE), SIDE + 1))
    y, x = (int(v) for v in rng.integers(0, SIDE - side + 1, size=2))
    out = F.interpolate(clip[:, :, y : y + side, x : x + side], size=(OUT, OUT), mode="bilinear",
                        align_corners=False)
    return out.flip(-1) if flip else out


def per_frame(factors: np.ndarray) -> torch.Tensor:
    return torch.tensor(factors, dtype=torch.float32).view(-1, 1, 1, 1)


def test_consistent_crop_on_a_panning_camera_is_not_flagged() -> None:
    """Whole-frame statistics drift with the pan; the located region's do not."""
    rng = np.random.default_rng(0)
    reports = []
    for i in range(CLIPS):
        raw = panning_clip(rng)
        aug = (crop_resize(raw, rng, flip=bool(i % 2)) * 1.1).clamp(0, 1)
        reports.append(clip_consistency(raw, aug))
    jitters = [r.jitter for r in reports]
    assert all(r.mode == "moments" for r in reports), reports
    assert all(r.consistent for r in reports), jitters
    assert max(jitters) < DEFAULT_THRESHOLD, jitters


def test_per_frame_brightness_jitter_on_a_panning_camera_is_flagged() -> None:
    rng = np.random.default_rng(1)
    reports = []
    for _ in range(CLIPS):
        raw = panning_clip(rng)
        factors = per_frame(rng.uniform(0.7, 1.3, size=FRAMES))  # brightness 0.3, per frame
        reports.append(clip_consistency(raw, (crop_resize(raw, rng) * factors).clamp(0, 1)))
    assert all(r.mode == "moments" for r in reports), reports
    flagged = [r.consistent is False for r in reports]
    assert np.mean(flagged) >= 0.9, [r.jitter for r in reports]


def test_output_that_shows_no_raw_region_is_skipped_not_judged() -> None:
    """A crop that moves from frame to frame (or content that is not the raw's): the
    photometric change cannot be read, so no verdict either way on real footage."""
    rng = np.random.default_rng(2)
    raw = panning_clip(rng)
    wandering = torch.stack([
        F.interpolate(raw[t : t + 1, :, 8 * t : 8 * t + 60, 40 : 100], size=(OUT, OUT),
                      mode="bilinear", align_corners=False)[0]
        for t in range(FRAMES)
    ])
    report = clip_consistency(raw, wandering)
    assert report.mode == "skipped" and report.consistent is None, report
    assert "frame" in report.note
    # Stationary texture (the probe's): any region's statistics stand for the crop's.
    tex = textured_clip(rng, 8, 64, 64)
    unrelated = textured_clip(rng, 8, 48, 48)
    assert clip_consistency(tex, unrelated).consistent is None
    assert clip_consistency(tex, unrelated, stationary=True).mode == "moments"


# -- layout ------------------------------------------------------------------------------
def ctx() -> Context:
    return Context.create(Identity(run="job", rank=0))


def counts(c: Context, source: str = "stream") -> dict[str, float]:
    s = parse(generate_latest(c.registry).decode())
    return {
        o: s[("prepwatch_clips_total", (("outcome", o), ("source", source)))]
        for o in ("consistent", "inconsistent", "skipped")
    }


def _pair_batches(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, T, C, H, W) raw, per-frame jittered and consistently recoloured batches."""
    rng = np.random.default_rng(seed)
    raw = torch.stack([textured_clip(rng, 16, 48, 48) for _ in range(2)])
    jitter = (raw * per_frame(rng.uniform(0.6, 1.4, size=16))).clamp(0, 1)
    recolour = (raw * torch.tensor([1.0, 0.8, 1.15]).view(1, 3, 1, 1)).clamp(0, 1)
    return raw, jitter, recolour


def test_ncthw_batches_are_split_into_frames_along_dim_2() -> None:
    raw, jitter, recolour = _pair_batches()
    cthw = lambda x: x.permute(0, 2, 1, 3, 4).contiguous()  # noqa: E731
    c = ctx()
    monitor = ClipMonitor(c, sample_every=1, budget=1.0, layout="NCTHW")
    jittered = monitor.check(cthw(raw), cthw(jitter))
    recoloured = monitor.check(cthw(raw), cthw(recolour))
    assert [r.frames for r in jittered + recoloured] == [16] * 4
    assert [r.consistent for r in jittered] == [False, False], jittered
    assert [r.consistent for r in recoloured] == [True, True], recoloured
    # The function takes one clip in either layout.
    assert not clip_consistency(cthw(raw)[0], cthw(jitter)[0], layout="CTHW").consistent
    assert clip_consistency(cthw(raw)[0], cthw(recolour)[0], layout="CTHW").consistent


def test_default_layout_refuses_plain_ncthw_on_the_first_call_and_counts_later() -> None:
    raw, jitter, _ = _pair_batches()
    cthw = raw.permute(0, 2, 1, 3, 4)
    c = ctx()
    monitor = ClipMonitor(c, sample_every=1, budget=1.0)
    with pytest.raises(ValueError, match='layout="NCTHW"'):
        monitor.observe(cthw, jitter.permute(0, 2, 1, 3, 4))
    with pytest.raises(ValueError, match="layout='CTHW'"):
        clip_consistency(cthw[0], cthw[0])
    # After a good first call, a wrong batch is counted, never raised into the loop.
    monitor = ClipMonitor(c, sample_every=1, budget=1.0)
    monitor.observe(raw, jitter)
    assert monitor.flush()  # measured on the background thread
    monitor.observe(cthw, jitter.permute(0, 2, 1, 3, 4))
    assert monitor.flush()
    assert c.errors.count("clips") == 1
    assert counts(c)["inconsistent"] == 2  # the good batch's two clips


def test_layout_option_is_validated_and_reaches_the_probe() -> None:
    c = ctx()
    with pytest.raises(ValueError, match="layout"):
        ClipMonitor(c, layout="CTHW")
    with pytest.raises(ValueError, match="layout"):
        ClipMonitor(c, layout="NCTHW", tv_tensors=True)
    rng = np.random.default_rng(4)

    def jitter_cthw(clip: torch.Tensor) -> torch.Tensor:  # a PyTorchVideo-style transform
        assert clip.shape[0] == 3, clip.shape
        return clip * torch.tensor(rng.uniform(0.6, 1.4, size=clip.shape[1]),
                                   dtype=clip.dtype).view(1, -1, 1, 1)

    def recolour_cthw(clip: torch.Tensor) -> torch.Tensor:
        assert clip.shape[0] == 3, clip.shape
        return clip * torch.tensor([1.0, 0.8, 1.15]).view(3, 1, 1, 1)

    watch = Watch(ctx(), None, None)
    bad = watch.clips(layout="NCTHW", transform=jitter_cthw, probe_shape=(8, 48, 48))
    assert [r.consistent for r in bad.probe(clips=2)] == [False, False]
    good = ClipMonitor(ctx(), layout="NCTHW", transform=recolour_cthw, probe_shape=(8, 48, 48))
    assert [r.consistent for r in good.probe(clips=2)] == [True, True]
    watch.stop()
