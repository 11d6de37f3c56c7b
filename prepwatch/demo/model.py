"""A small CNN: ~50 ms per batch of 64 on one CPU thread.

Wide enough that a healthy demo is clearly compute-bound: a plain DataLoader needs
3-5 ms to hand a batch from a worker to the loop on a 2-core machine, which must stay
a small share of the step for the healthy run to be healthy.
"""

from __future__ import annotations

from torch import nn


def small_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, num_classes),
    )
