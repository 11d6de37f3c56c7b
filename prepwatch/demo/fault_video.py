"""``prepwatch demo --fault video``: colour jitter drawn again for every frame of a clip.

A small motion classifier (which way does the square move: right, left, down, up) trains
on generated 8-frame clips through a DataLoader with workers. The augmentation applies
brightness and contrast jitter to each frame independently, the mistake of mapping an
image transform over frames, so the clip flickers. prepwatch probes a copy of that
clip transform in the training process with generated clips whose content itself dims
(which must not count) and finds almost every clip inconsistent:
``prepwatch_clip_photometric_jitter`` sits far above its threshold and
``PrepwatchClipAugmentationInconsistent`` fires.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from prepwatch.demo.geometry_transforms import clip_jitter

FRAMES, SIZE, BATCH = 8, 32, 32
DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1))  # right, left, down, up
SPEED = 2


def motion_clip(rng: np.random.Generator, direction: int) -> torch.Tensor:
    """(T, 3, H, W) in [0, 1]: a square crossing textured noise in ``direction``."""
    background = np.clip(rng.normal(0.45, 0.1, size=(3, SIZE, SIZE)), 0, 1)
    side = int(rng.integers(6, 10))
    colour = rng.uniform(0.1, 0.9, size=3)
    dx, dy = DIRECTIONS[direction]
    span = SIZE - side - FRAMES * SPEED
    x = int(rng.integers(0, span)) + (FRAMES * SPEED if dx < 0 else 0)
    y = int(rng.integers(0, span)) + (FRAMES * SPEED if dy < 0 else 0)
    if dx == 0:
        x = int(rng.integers(0, SIZE - side))
    if dy == 0:
        y = int(rng.integers(0, SIZE - side))
    clip = np.repeat(background[None], FRAMES, axis=0)
    for t in range(FRAMES):
        xt, yt = x + dx * SPEED * t, y + dy * SPEED * t
        clip[t, :, yt : yt + side, xt : xt + side] = colour[:, None, None]
    return torch.from_numpy(clip.astype(np.float32))


class MotionClips(Dataset):
    def __init__(self, size: int, seed: int, transform: Any = None) -> None:
        self.size = size
        self.seed = seed
        self.transform = transform

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng(self.seed * 1_000_003 + index)
        label = int(rng.integers(len(DIRECTIONS)))
        clip = motion_clip(rng, label)
        if self.transform is not None:
            clip = self.transform(clip)
        return clip, label


class MotionNet(nn.Module):
    """Differences between consecutive frames, then two convolutions: motion is local."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3 * (FRAMES - 1), 32, 5, padding=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(32 * 4, len(DIRECTIONS)),
        )

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.body((clips[:, 1:] - clips[:, :-1]).flatten(1, 2))


def motion_net() -> nn.Module:
    return MotionNet()


def run(watch: Any, *, seconds: float, workers: int = 0, seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    transform = clip_jitter(0.4, 0.4, per_frame=True)  # the fault
    monitor = watch.clips(transform=transform, probe_every=10, budget=0.05,
                          probe_shape=(FRAMES, 64, 64), seed=seed)
    loader = DataLoader(
        MotionClips(10**6, seed, transform), batch_size=BATCH, num_workers=workers,
        persistent_workers=workers > 0,
    )
    eval_set = MotionClips(256, seed + 1)
    eval_clips = torch.stack([eval_set[i][0] for i in range(len(eval_set))])
    eval_labels = torch.tensor([eval_set[i][1] for i in range(len(eval_set))])
    model = motion_net()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    deadline = time.monotonic() + seconds
    step = 0
    for clips, labels in watch.loader(loader):
        model.train()
        loss = nn.functional.cross_entropy(model(clips), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        monitor.step()
        step += 1
        if time.monotonic() >= deadline:
            break
    reports = monitor.probe(clips=5)  # a last look for the summary
    model.eval()
    with torch.no_grad():
        accuracy = float((model(eval_clips).argmax(1) == eval_labels).float().mean())
    jitters = [r.jitter for r in reports if r.jitter is not None]
    return {
        "steps": step,
        "inconsistent": sum(1 for r in reports if r.consistent is False),
        "probed": len(reports),
        "median_jitter": float(np.median(jitters)) if jitters else float("nan"),
        "threshold": monitor.threshold,
        "accuracy": accuracy,
    }


def main(watch: Any, args: argparse.Namespace) -> None:
    seconds = args.seconds if args.seconds and args.seconds > 0 else 90.0
    r = run(watch, seconds=seconds, workers=args.workers, seed=args.seed)
    print(
        f"video: {r['steps']} steps; {r['inconsistent']} of {r['probed']} probed clips inconsistent "
        f"(median jitter {r['median_jitter']:.3f}, threshold {r['threshold']:.3f}); "
        f"motion accuracy on clean clips: {r['accuracy']:.0%}."
    )
