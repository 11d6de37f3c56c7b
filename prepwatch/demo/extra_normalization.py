"""Healthy-demo extra: record the input contract while training, guard the eval batches.

Training batches (what the model receives) are recorded; at each eval round the
contract is rebuilt from what was recorded so far once it has grown, and the clean
eval batches are checked against it as a server would check its requests. A
healthy run shows train and serve channel statistics side by side and every
violation counter at 0.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from prepwatch.checks.inputs.monitor import Declared, InputMonitor

REBUILD_GROWTH = 1.5  # rebuild the contract when recordings grew by half since the last


def _demo_declared() -> Declared | None:
    try:
        from prepwatch.demo.data import MEAN, STD
    except ImportError:  # pragma: no cover - the demo's data module is the lead's
        return None
    return Declared(tuple(MEAN), tuple(STD))


class Extra:
    def __init__(self, watch: Any, args: argparse.Namespace) -> None:
        self.monitor: InputMonitor = watch.inputs(
            declared=_demo_declared(), sample_every=2, images_per_sample=16, seed=args.seed,
        )
        self._built_at = 0

    def on_train_step(
        self, step: int, images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor,
    ) -> None:
        self.monitor.record(images)

    def on_eval(self, images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> None:
        recorded = self.monitor.recorded_batches
        if recorded == 0:
            return
        if self.monitor.reference is None or recorded >= REBUILD_GROWTH * self._built_at:
            self.monitor.use(self.monitor.contract())
            self._built_at = recorded
        self.monitor.guard(images)

    def close(self) -> None:
        self.monitor.close()
