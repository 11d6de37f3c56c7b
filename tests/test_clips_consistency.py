"""Clip consistency on generated moving-object videos: consistent vs per-frame jitter.

Frame-by-frame comparison of augmented against raw makes changes of the content itself
(lights dimming, flicker) cancel: those clips must not count as inconsistent.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prepwatch.checks.clips.consistency import DEFAULT_THRESHOLD, clip_consistency
from prepwatch.checks.clips.synthetic import brightness_ramp, moving_object_clip, textured_clip
from prepwatch.demo.geometry_transforms import clip_jitter

torch.set_num_threads(1)
CLIPS = 12


def _clips(seed: int, content: str, n: int = CLIPS, size: int = 48):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        if content == "steady":
            gains = None
        elif content == "dimming":
            gains = brightness_ramp(8, 1.0, 0.45)
        else:  # flicker: +-15% from frame to frame
            gains = list(1.0 + 0.15 * np.sin(np.arange(8) * 1.7))
        yield moving_object_clip(rng, 8, size, size, gains=gains)


def _jitters(transform, content: str, seed: int = 0) -> np.ndarray:
    torch.manual_seed(seed)
    out = []
    for clip in _clips(seed, content):
        report = clip_consistency(clip, transform(clip))
        assert report.mode == "pixel" and report.jitter is not None
        out.append(report.jitter)
    return np.asarray(out)


@pytest.mark.parametrize("content", ["steady", "dimming", "flicker"])
def test_consistent_augmentation_is_near_zero_whatever_the_content_does(content: str) -> None:
    jitter = _jitters(clip_jitter(0.4, 0.4), content)
    assert jitter.max() < DEFAULT_THRESHOLD / 2, jitter
    # No augmentation at all, on content that changes brightness by itself: exactly nothing.
    identity = _jitters(lambda c: c.clone(), content)
    assert identity.max() < 1e-4


@pytest.mark.parametrize("content", ["steady", "dimming"])
def test_per_frame_independent_jitter_is_flagged(content: str) -> None:
    jitter = _jitters(clip_jitter(0.3, 0.3, per_frame=True), content, seed=1)
    assert np.median(jitter) > 3 * DEFAULT_THRESHOLD, jitter
    assert (jitter > DEFAULT_THRESHOLD).mean() >= 0.9, jitter


def test_jitter_scales_with_the_spread_of_the_brightness_factor() -> None:
    """Brightness factors with standard deviation s around 1 measure about s."""
    rng = np.random.default_rng(3)
    clip = moving_object_clip(rng, 16, 48, 48)
    clip = clip * 0.6  # no clamping at the top
    for spread in (0.05, 0.1, 0.2):
        factors = 1.0 + spread * torch.from_numpy(rng.standard_normal(16)).float()
        report = clip_consistency(clip, clip * factors[:, None, None, None])
        relative = float(factors.std() / factors.mean())
        # The content-level term of the shared fit takes a small share (about 1/(T-1)).
        assert 0.75 * relative <= report.jitter <= 1.05 * relative, (spread, report)


def test_additive_shift_per_frame_is_flagged_and_a_constant_one_is_not() -> None:
    rng = np.random.default_rng(4)
    clip = moving_object_clip(rng, 8, 48, 48) * 0.8
    constant = clip_consistency(clip, clip + 0.1)
    assert constant.jitter < 1e-4 and constant.consistent
    shifts = torch.linspace(-0.08, 0.08, 8)[torch.randperm(8)]
    varying = clip_consistency(clip, clip + shifts[:, None, None, None])
    assert not varying.consistent and varying.jitter > 2 * DEFAULT_THRESHOLD


def test_consistent_flip_is_undone_and_crops_fall_back_to_moments() -> None:
    rng = np.random.default_rng(5)
    clip = moving_object_clip(rng, 8, 48, 48, gains=brightness_ramp(8, 1.0, 0.6))
    flipped = clip_jitter(0.3, 0.3)(clip).flip(-1)
    report = clip_consistency(clip, flipped)
    assert report.mode == "pixel" and report.consistent, report
    # A consistent crop + resize of stationary texture: moments mode, still consistent.
    tex = textured_clip(rng, 8, 96, 96, gains=brightness_ramp(8, 1.0, 0.6))
    crop = torch.nn.functional.interpolate(
        clip_jitter(0.3, 0.3)(tex)[:, :, 20:80, 10:70], size=(40, 40), mode="bilinear", antialias=True,
    )
    report = clip_consistency(tex, crop)
    assert report.mode == "moments" and report.consistent, report
    per_frame = torch.nn.functional.interpolate(
        clip_jitter(0.3, 0.3, per_frame=True)(tex)[:, :, 20:80, 10:70], size=(40, 40),
        mode="bilinear", antialias=True,
    )
    assert not clip_consistency(tex, per_frame).consistent


def test_unmeasurable_clips_are_skipped_not_judged() -> None:
    rng = np.random.default_rng(6)
    clip = moving_object_clip(rng, 8, 32, 32)
    one = clip_consistency(clip[:1], clip[:1])
    assert one.mode == "skipped" and one.consistent is None
    flat = torch.full((4, 3, 32, 32), 0.5)
    assert clip_consistency(flat, flat).consistent is None
    with pytest.raises(ValueError, match="frames"):
        clip_consistency(clip, clip[:4])


def test_torchvision_color_jitter_on_video_tensors() -> None:
    pytest.importorskip("torchvision")
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    jitter = v2.ColorJitter(0.4, 0.4, 0.4, 0.05)

    def consistent(clip):  # one draw for the whole Video
        return jitter(tv_tensors.Video(clip)).as_subclass(torch.Tensor)

    def per_frame(clip):  # the bug: the transform called frame by frame
        return torch.stack([jitter(frame) for frame in clip])

    ok = _jitters(consistent, "dimming", seed=7)
    bad = _jitters(per_frame, "dimming", seed=7)
    assert (ok <= DEFAULT_THRESHOLD).all(), ok
    assert (bad > DEFAULT_THRESHOLD).mean() >= 0.9, bad
