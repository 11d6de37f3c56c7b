"""Class health in the healthy demo: per-class recall on the train stream and clean eval.

The demo's evaluation calls ``on_eval`` for each clean batch and then resumes training,
which closes the evaluation pass (ClassHealth's implicit pass rule), so each demo
evaluation round becomes one ``prepwatch_eval_rounds_total`` increment.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

# The colours of prepwatch.demo.data.PALETTE, in order: class c is a blob of colour c.
CLASS_NAMES = ["red", "green", "yellow", "blue", "orange", "purple", "cyan", "magenta", "lime", "pink"]
# What prepwatch.demo.data.SyntheticShapes(augment=True) does to training samples.
DEMO_AUGMENTATION = {"hflip_p": 0.5}


class Extra:
    def __init__(self, watch: Any, args: argparse.Namespace) -> None:
        self.watch = watch
        self.health = watch.class_health(
            num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES,
            window_seconds=30.0, flush_every_steps=20,
        )
        augmentation = getattr(args, "augmentation", None) or DEMO_AUGMENTATION
        watch.class_health().report_augmentation(**augmentation)

    def on_train_step(self, step: int, images: torch.Tensor, labels: torch.Tensor,
                      logits: torch.Tensor) -> None:
        self.watch.class_health().train_predictions(logits, labels)

    def on_eval(self, images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> None:
        self.watch.class_health().eval_predictions(logits, labels)

    def close(self) -> None:
        self.health.close()
