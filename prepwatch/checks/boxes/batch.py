"""Reading a batch in the forms detection pipelines use: tensors, lists of tensors,
dicts of ``boxes``/``labels`` (torchvision), tv_tensors, per-image sizes of padded
batches. The monitor sees one normalized :class:`Batch`, whatever came in.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from prepwatch.checks.boxes.formats import (
    is_normalized,
    to_xyxy,
)

log = logging.getLogger("prepwatch")

def cpu_copy(image: Any) -> Any:
    if isinstance(image, torch.Tensor):
        return image.detach().to("cpu", copy=True)
    return np.array(image, copy=True)


def canvas_size(image: Any) -> tuple[int, int]:
    shape = tuple(image.shape) if hasattr(image, "shape") else np.asarray(image).shape
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    if len(shape) == 3:
        if not isinstance(image, torch.Tensor) and shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4):
            return int(shape[0]), int(shape[1])  # numpy HWC
        return int(shape[-2]), int(shape[-1])
    raise ValueError(f"expected images of shape (C, H, W) or (H, W), got {shape}")


def size_pair(size: Any) -> tuple[int, int]:
    """(H, W) from a pair, list or 2-element tensor."""
    values = size.tolist() if hasattr(size, "tolist") else list(size)
    if len(values) != 2:
        raise ValueError(f"image_sizes holds (H, W) per image; got {size!r}")
    return int(values[0]), int(values[1])


def _as_xyxy(boxes: Any, fmt: str, canvas: tuple[int, int]) -> np.ndarray:
    if boxes is None:
        return np.zeros((0, 4))
    box_fmt = getattr(boxes, "format", None)
    if box_fmt is not None and hasattr(boxes, "canvas_size"):
        fmt = {"XYXY": "xyxy", "XYWH": "xywh", "CXCYWH": "cxcywh"}[str(box_fmt.name).upper()]
    if isinstance(boxes, torch.Tensor):
        arr = boxes.detach().cpu().as_subclass(torch.Tensor).to(torch.float64).numpy()
    else:
        arr = np.asarray(boxes, dtype=np.float64)
    return to_xyxy(arr.reshape(-1, 4), fmt, canvas[1], canvas[0])


def _as_labels(labels: Any) -> np.ndarray | None:
    if labels is None:
        return None
    if isinstance(labels, torch.Tensor):
        return labels.detach().cpu().as_subclass(torch.Tensor).numpy().reshape(-1)
    return np.asarray(labels).reshape(-1)


class Batch:
    """One observed batch: all boxes joined (xyxy) with per-image counts and canvases.

    Joined, the sanity check is a few array operations whatever the batch size; labels
    and per-image splits are only made when an overlay needs them.
    """

    __slots__ = ("canvases", "boxes", "counts", "boxes_in", "_labels")

    def __init__(self, canvases: list[tuple[int, int]], boxes: np.ndarray, counts: list[int],
                 boxes_in: list[int | None], labels: list[Any]) -> None:
        self.canvases = canvases
        self.boxes = boxes
        self.counts = counts
        self.boxes_in = boxes_in
        self._labels = labels

    def per_image(self) -> list[np.ndarray]:
        return np.split(self.boxes, np.cumsum(self.counts)[:-1]) if self.counts else []

    def labels(self, i: int) -> np.ndarray | None:
        return _as_labels(self._labels[i]) if i < len(self._labels) else None

    @classmethod
    def parse(cls, images: Any, boxes: Any, labels: Any, boxes_in: Any, fmt: str,
              image_sizes: Any = None) -> Batch:
        n = len(images)
        if boxes is None:
            raise TypeError(
                "observe() needs boxes: observe(images, targets) or observe(images, boxes, labels)"
            )
        if isinstance(boxes, torch.Tensor) and boxes.dim() == 3:
            boxes = list(boxes)
        if len(boxes) != n:
            raise ValueError(f"observe() got {n} images but {len(boxes)} box sets")
        dicts = n > 0 and isinstance(boxes[0], dict)
        raw = [item.get("boxes") for item in boxes] if dicts else list(boxes)
        if image_sizes is not None:
            if len(image_sizes) != n:
                raise ValueError(f"observe() got {n} images but {len(image_sizes)} image_sizes")
            canvases = [size_pair(size) for size in image_sizes]
        elif isinstance(images, torch.Tensor) and images.dim() == 4:
            canvases = [(int(images.shape[-2]), int(images.shape[-1]))] * n
        else:
            canvases = [canvas_size(images[i]) for i in range(n)]
        joined, counts = _join_xyxy(raw, fmt, canvases)
        if dicts:
            label_list = [item.get("labels") for item in boxes]
            in_counts = [item.get("boxes_in") for item in boxes]
        else:
            label_list = [labels[i] for i in range(n)] if labels is not None else []
            in_counts = [None] * n
        if boxes_in is not None:
            in_counts = list(boxes_in)
        return cls(canvases, joined, counts, [None if c is None else int(c) for c in in_counts],
                   label_list)


def _join_xyxy(
    raw: list[Any], fmt: str, canvases: list[tuple[int, int]],
) -> tuple[np.ndarray, list[int]]:
    """All images' boxes as one xyxy pixel array, converted in one go where they are plain
    tensors; normalized formats are scaled by each image's (H, W) in ``canvases``."""
    plain = bool(raw) and all(
        isinstance(b, torch.Tensor) and getattr(b, "format", None) is None and b.dim() == 2
        for b in raw
    )
    if plain:
        counts = [int(b.shape[0]) for b in raw]
        joined = torch.cat([b.detach().reshape(-1, 4) for b in raw]).cpu().to(torch.float64).numpy()
        if is_normalized(fmt):
            sizes = np.repeat(np.asarray(canvases, dtype=np.float64).reshape(-1, 2), counts, axis=0)
            return to_xyxy(joined, fmt, sizes[:, 1], sizes[:, 0]), counts
        return to_xyxy(joined, fmt), counts
    parts = [_as_xyxy(b, fmt, c) for b, c in zip(raw, canvases)]
    counts = [len(p) for p in parts]
    return (np.concatenate(parts) if parts else np.zeros((0, 4))), counts
