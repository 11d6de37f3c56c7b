"""Generated moving-object clips: probe input for clip transforms, and test material.

Each clip has a textured, coloured background and a few coloured objects moving in
straight lines, so consecutive frames differ the way real footage does. ``gains`` lets
the content itself change brightness over time (lights dimming, auto exposure): a
consistency check must not mistake that for augmentation jitter.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def moving_object_clip(
    rng: np.random.Generator,
    frames: int = 8,
    height: int = 64,
    width: int = 64,
    *,
    objects: int = 3,
    gains: Sequence[float] | None = None,
) -> torch.Tensor:
    """A float32 clip (T, 3, H, W) in [0, 1]; ``gains[t]`` scales frame t's content."""
    if frames < 1 or height < 8 or width < 8:
        raise ValueError(f"clip too small: {frames} frames of {height}x{width}")
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.empty((3, height, width))
    for c in range(3):
        fx, fy = rng.uniform(0.5, 3.0, size=2) * 2 * np.pi / np.array([width, height])
        phase = rng.uniform(0, 2 * np.pi)
        level, amp = rng.uniform(0.25, 0.5), rng.uniform(0.05, 0.15)
        base[c] = level + amp * np.sin(fx * xs + fy * ys + phase)
    base += rng.normal(0.0, 0.02, size=base.shape)  # sensor-like grain
    specs = []
    for _ in range(objects):
        size = rng.uniform(0.12, 0.3) * min(height, width)
        pos = rng.uniform([0, 0], [width - size, height - size])
        vel = rng.uniform(-2.5, 2.5, size=2)
        color = rng.uniform(0.05, 0.95, size=3)
        round_ = bool(rng.integers(2))
        specs.append((size, pos, vel, color, round_))
    clip = np.empty((frames, 3, height, width))
    for t in range(frames):
        frame = base.copy()
        for size, pos, vel, color, round_ in specs:
            x0, y0 = (pos + vel * t) % np.array([width - size, height - size])
            if round_:
                r = size / 2
                inside = (xs - x0 - r) ** 2 + (ys - y0 - r) ** 2 <= r * r
            else:
                inside = (xs >= x0) & (xs < x0 + size) & (ys >= y0) & (ys < y0 + size)
            frame[:, inside] = color[:, None]
        gain = 1.0 if gains is None else float(gains[t])
        clip[t] = frame * gain
    return torch.from_numpy(np.clip(clip, 0.0, 1.0).astype(np.float32))


def brightness_ramp(frames: int, start: float = 1.0, stop: float = 0.5) -> list[float]:
    """Per-frame gains for content that dims (or brightens) steadily over the clip."""
    if frames == 1:
        return [start]
    return [start + (stop - start) * t / (frames - 1) for t in range(frames)]


def textured_clip(
    rng: np.random.Generator,
    frames: int = 8,
    height: int = 64,
    width: int = 64,
    *,
    gains: Sequence[float] | None = None,
) -> torch.Tensor:
    """A float32 clip (T, 3, H, W): fine coloured texture drifting across the frame.

    Its statistics are the same in every part of every frame, so a crop or resize that
    the augmentation applies consistently does not change them between frames: the
    moment-based measurement (used when frame geometry changes) sees only photometric
    change. ``gains[t]`` scales frame t's content as in :func:`moving_object_clip`.
    """
    if frames < 1 or height < 8 or width < 8:
        raise ValueError(f"clip too small: {frames} frames of {height}x{width}")
    noise = torch.from_numpy(rng.normal(size=(1, 3, height, width)).astype(np.float32))
    kernel = torch.tensor([1.0, 2.0, 1.0]) / 4.0  # a little spatial correlation, no more
    weight = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3).contiguous()
    smooth = torch.nn.functional.conv2d(
        torch.nn.functional.pad(noise, (1, 1, 1, 1), mode="circular"), weight, groups=3,
    )[0].numpy().astype(np.float64)
    smooth /= smooth.std(axis=(1, 2), keepdims=True)
    mix = rng.uniform(0.3, 1.0, size=(3, 3))  # correlated channels, like real colour
    texture = np.tensordot(mix / mix.sum(axis=1, keepdims=True), smooth, axes=1)
    # Mid-grey with a modest spread: brightness and contrast changes of +-40% stay
    # inside [0, 1], so no clamping bends the statistics.
    texture = 0.4 + 0.08 * texture / texture.std()
    vel = rng.integers(-3, 4, size=2)
    clip = np.empty((frames, 3, height, width))
    for t in range(frames):
        gain = 1.0 if gains is None else float(gains[t])
        clip[t] = np.roll(texture, (int(vel[1] * t), int(vel[0] * t)), axis=(1, 2)) * gain
    return torch.from_numpy(np.clip(clip, 0.0, 1.0).astype(np.float32))
