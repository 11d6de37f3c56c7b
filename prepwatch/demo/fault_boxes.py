"""``prepwatch demo --fault boxes``: a rotation that turns the image but not its boxes.

A small box regressor trains on generated images (one coloured square on textured noise,
64x64) through a DataLoader with workers. The augmentation is a horizontal flip (correct)
and random quarter turns whose boxes are left unrotated: the classic bug of calling an
image-only rotation in a detection pipeline. Three quarters of the training targets
then point at the wrong place. What prepwatch shows, while the job runs:

- the alignment probe, run on a copy of the same transform in the training process,
  finds most trials misaligned (``prepwatch_box_misalignments_total{kind="iou"}``), so
  ``PrepwatchBoxesMisaligned`` fires;
- the overlays under ``<artifacts>/overlays/`` show boxes beside their squares;
- the model's box IoU on clean (unaugmented) images stays poor: it learns the average
  of scattered targets.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from prepwatch.checks.boxes.formats import iou
from prepwatch.demo import geometry_transforms as gt
from prepwatch.demo.geometry_data import CLASS_NAMES, detection_sample

SIZE = 64
BATCH = 32
OVERLAY_EVERY = 25  # steps between overlay grids


class QuarterTurnImageOnly:
    """The bug: the pixels turn, the boxes stay."""

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor):
        k = int(torch.randint(0, 4, ()))
        return torch.rot90(image, k, dims=(-2, -1)), boxes, labels


def buggy_transform() -> gt.Compose:
    return gt.Compose([gt.RandomHorizontalFlip(), QuarterTurnImageOnly()])


class BoxDataset(Dataset):
    """One square per image, generated per index; the transform runs in the workers."""

    def __init__(self, size: int, seed: int, transform: Any = None) -> None:
        self.size = size
        self.seed = seed
        self.transform = transform

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        rng = np.random.default_rng(self.seed * 1_000_003 + index)
        image, boxes, labels = detection_sample(rng, SIZE, objects=1)
        if self.transform is not None:
            image, boxes, labels = self.transform(image, boxes, labels)
        return image, boxes[0], labels[0]


def box_regressor() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        nn.Flatten(), nn.Linear(32 * 16, 4), nn.Sigmoid(),
    )


def mean_iou(model: nn.Module, images: torch.Tensor, boxes: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(images) * SIZE
    return float(np.mean([iou(p.tolist(), b.tolist()) for p, b in zip(pred, boxes)]))


def run(watch: Any, *, seconds: float, workers: int = 0, seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    transform = buggy_transform()
    monitor = watch.boxes(
        transform=transform, probe_every=10, probe_trials=2, probe_budget=0.05, sample_every=1,
        overlay_every=OVERLAY_EVERY if watch.artifacts_dir else 0, overlay_keep=10, overlay_max_images=16,
        class_names=list(CLASS_NAMES), seed=seed,
    )
    loader = DataLoader(
        BoxDataset(10**6, seed, transform), batch_size=BATCH, shuffle=False, num_workers=workers,
        persistent_workers=workers > 0,
    )
    eval_set = BoxDataset(256, seed + 1)
    eval_images = torch.stack([eval_set[i][0] for i in range(len(eval_set))])
    eval_boxes = torch.stack([eval_set[i][1] for i in range(len(eval_set))])
    model = box_regressor()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    deadline = time.monotonic() + seconds
    step = 0
    for images, boxes, labels in watch.loader(loader):
        model.train()
        loss = nn.functional.smooth_l1_loss(model(images), boxes / SIZE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        monitor.observe(images, boxes[:, None, :], labels[:, None])
        step += 1
        # At least one overlay's worth of steps: on a loaded machine `seconds` may end first.
        if time.monotonic() >= deadline and step >= (OVERLAY_EVERY if watch.artifacts_dir else 0):
            break
    monitor.flush()
    report = monitor.probe(20)  # a last, larger look for the summary
    return {
        "steps": step,
        "misaligned": report.misaligned if report else 0,
        "judged": (report.aligned + report.misaligned) if report else 0,
        "kinds": report.kinds() if report else {},
        "clean_iou": mean_iou(model, eval_images, eval_boxes),
        "overlays": monitor.overlay_dir,
    }


def main(watch: Any, args: argparse.Namespace) -> None:
    seconds = args.seconds if args.seconds and args.seconds > 0 else 90.0
    if watch.artifacts_dir is None:  # pragma: no cover - prepwatch.start always sets one
        watch.artifacts_dir = Path(tempfile.mkdtemp(prefix="prepwatch-boxes-"))
    result = run(watch, seconds=seconds, workers=args.workers, seed=args.seed)
    kinds = ", ".join(f"{k} {v}" for k, v in result["kinds"].items() if v) or "none"
    share = result["misaligned"] / max(1, result["judged"])
    print(
        f"boxes: {result['steps']} steps; the alignment probe found {result['misaligned']} of "
        f"{result['judged']} judged boxes misaligned ({share:.0%}; {kinds}); "
        f"box IoU of the model on clean images: {result['clean_iou']:.2f}."
    )
    if result["overlays"] is not None:
        print(f"boxes: sampled batches drawn with their boxes in {result['overlays']}")
    if math.isnan(result["clean_iou"]):  # pragma: no cover
        print("boxes: no evaluation")
