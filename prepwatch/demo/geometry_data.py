"""Generated detection samples for the box demos: coloured squares on textured noise."""

from __future__ import annotations

import numpy as np
import torch

CLASS_NAMES = ("red", "green", "blue")
_COLOURS = np.array([[0.9, 0.15, 0.1], [0.1, 0.8, 0.2], [0.15, 0.3, 0.95]], dtype=np.float32)


def detection_sample(
    rng: np.random.Generator, size: int = 64, objects: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A float (3, size, size) image in [0, 1], its xyxy boxes and class labels."""
    image = np.clip(rng.normal(0.45, 0.12, size=(3, size, size)), 0, 1).astype(np.float32)
    boxes, labels = [], []
    for _ in range(objects):
        side = int(rng.integers(size // 6, size // 2))
        x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        label = int(rng.integers(len(CLASS_NAMES)))
        image[:, y : y + side, x : x + side] = _COLOURS[label][:, None, None]
        boxes.append((x, y, x + side, y + side))
        labels.append(label)
    return (
        torch.from_numpy(image),
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.int64),
    )
