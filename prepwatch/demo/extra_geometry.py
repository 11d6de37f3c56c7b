"""Healthy-demo extra: box sanity, alignment probes, overlays and clip consistency.

The demo trains a classifier, so this extra brings its own small detection stream (a
few generated images with boxes, pushed through a correct detection transform every few
steps) and its own clips. Everything it feeds is healthy: the probes find every box
aligned, every clip consistent, and the dashboard's panels all have data.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from prepwatch.checks.clips.synthetic import brightness_ramp, moving_object_clip
from prepwatch.checks.common.transforms import is_tv_transform
from prepwatch.demo import geometry_transforms as gt
from prepwatch.demo.geometry_data import CLASS_NAMES, detection_sample

BOX_EVERY = 10  # steps between detection batches fed to observe()
CLIP_EVERY = 50  # steps between observed clips
DETECTION_BATCH = 6


def detection_transform() -> Any:
    """torchvision's v2 detection recipe when installed (the common case), else plain torch."""
    try:
        from torchvision.transforms import v2
    except ImportError:
        return gt.healthy_detection_transform()
    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomHorizontalFlip(),
        v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.8, 1.2)),
        v2.SanitizeBoundingBoxes(),
    ])


class Extra:
    def __init__(self, watch: Any, args: argparse.Namespace) -> None:
        self.transform = detection_transform()
        self.boxes = watch.boxes(
            transform=self.transform, probe_every=5, probe_trials=2, probe_budget=0.02,
            sample_every=1, overlay_every=5 if watch.artifacts_dir else 0, overlay_keep=10,
            overlay_max_images=DETECTION_BATCH, class_names=list(CLASS_NAMES), seed=args.seed,
        )
        self.clip_transform = gt.clip_jitter(0.3, 0.3)  # one draw per clip: consistent
        self.clips = watch.clips(transform=self.clip_transform, probe_every=40, budget=0.02,
                                 probe_shape=(8, 64, 64), seed=args.seed)
        self.rng = np.random.default_rng(args.seed + 77)
        self._step = 0

    def _detection_batch(self) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        images, targets = [], []
        tv = is_tv_transform(self.transform)
        for _ in range(DETECTION_BATCH):
            image, boxes, labels = detection_sample(self.rng, 64, objects=int(self.rng.integers(1, 4)))
            if tv:
                from torchvision import tv_tensors

                out, target = self.transform(
                    tv_tensors.Image(image),
                    {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(64, 64)),
                     "labels": labels},
                )
                image, boxes, labels = out.as_subclass(torch.Tensor), target["boxes"], target["labels"]
            else:
                image, boxes, labels = self.transform(image, boxes, labels)
            images.append(image)
            targets.append({"boxes": boxes, "labels": labels, "boxes_in": len(labels)})
        return torch.stack(images), targets

    def on_train_step(self, step: int, images: torch.Tensor, labels: torch.Tensor,
                      logits: torch.Tensor) -> None:
        self._step += 1
        if self._step % BOX_EVERY == 0:
            self.boxes.observe(*self._detection_batch())
        if self._step % CLIP_EVERY == 0:
            raw = moving_object_clip(self.rng, 8, 32, 32, gains=brightness_ramp(8, 1.0, 0.7))
            self.clips.observe(raw, self.clip_transform(raw))
        else:
            self.clips.step()

    def on_eval(self, images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> None:
        pass

    def close(self) -> None:
        self.boxes.flush()
