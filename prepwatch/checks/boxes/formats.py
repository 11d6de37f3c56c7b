"""Box coordinate conventions, IoU and per-box sanity outcomes.

Everything inside prepwatch compares boxes in one convention: continuous ``xyxy``,
where pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)``, so a box
``[x1, y1, x2, y2]`` covers the pixels with ``x1 <= j < x2``. This is torchvision's and
COCO's convention; its horizontal flip is ``x' = W - x``. The pixel-index convention
(``xyxy_inclusive``, where ``x2`` is the last covered column, as in Pascal VOC files and
many hand-written pipelines) flips with ``x' = W - 1 - x``. Mixing the two shifts a
flipped box by one pixel: that is the off-by-one the alignment probe looks for.

Normalized formats (``xyxy_norm``, ``xywh_norm``, ``cxcywh_norm``) hold coordinates as
fractions of the image's width and height, as YOLO label files and DETR targets do
(both ``cxcywh_norm``). They are scaled by the image they belong to before
anything is compared, so ``x2 = 1.3`` lands 30% of the width outside the image.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

FORMATS = ("xyxy", "xyxy_inclusive", "xywh", "cxcywh")
NORMALIZED_FORMATS = ("xyxy_norm", "xywh_norm", "cxcywh_norm")
ALL_FORMATS = FORMATS + NORMALIZED_FORMATS

# Sanity outcomes of one box leaving the transform (a partition: every box gets one).
OUTCOMES = ("kept", "clipped", "out_of_bounds", "degenerate", "dropped")

# Coordinates further than this outside the canvas count as out of bounds. Affine
# transforms leave float noise of ~1e-4 px on clamped edges; a real overshoot is >= 1 px.
BOUNDS_TOLERANCE_PX = 0.01


def check_format(fmt: str, *, normalized: bool = False) -> str:
    """``fmt`` if it is a known box format; ``normalized`` also admits the ``*_norm`` ones."""
    allowed = ALL_FORMATS if normalized else FORMATS
    if fmt not in allowed:
        hint = ""
        if fmt in NORMALIZED_FORMATS:
            hint = " (normalized formats need the image size and are not accepted here)"
        elif normalized:
            hint = (" (the *_norm formats are fractions of the image width and height, "
                    "e.g. YOLO and DETR boxes: cxcywh_norm)")
        raise ValueError(f"box_format must be one of {', '.join(allowed)}; got {fmt!r}{hint}")
    return fmt


def is_normalized(fmt: str) -> bool:
    return fmt in NORMALIZED_FORMATS


def pixel_format(fmt: str) -> str:
    """The pixel format a normalized one is a fraction of (``cxcywh_norm`` -> ``cxcywh``)."""
    return fmt[: -len("_norm")] if fmt in NORMALIZED_FORMATS else fmt


def _scale(width: Any, height: Any, n: int, fmt: str) -> np.ndarray:
    if width is None or height is None:
        raise ValueError(f"box format {fmt!r} is normalized: converting it needs the image width and height")
    w = np.broadcast_to(np.asarray(width, dtype=np.float64).reshape(-1), (n,))
    h = np.broadcast_to(np.asarray(height, dtype=np.float64).reshape(-1), (n,))
    return np.stack([w, h, w, h], axis=1)


def to_xyxy(boxes: np.ndarray, fmt: str, width: Any = None, height: Any = None) -> np.ndarray:
    """Convert ``(N, 4)`` boxes in ``fmt`` to continuous xyxy pixels (float64 copy).

    ``width`` and ``height`` (scalars, or one per box) are needed for normalized formats
    and ignored otherwise.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    if fmt in NORMALIZED_FORMATS:
        return to_xyxy(b, pixel_format(fmt)) * _scale(width, height, len(b), fmt)
    if fmt == "xyxy":
        return b
    if fmt == "xyxy_inclusive":
        b[:, 2:] += 1.0
        return b
    if fmt == "xywh":
        b[:, 2:] += b[:, :2]
        return b
    if fmt == "cxcywh":
        half = b[:, 2:] / 2.0
        return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)
    raise ValueError(f"unknown box format {fmt!r}")


def from_xyxy(boxes: np.ndarray, fmt: str, width: Any = None, height: Any = None) -> np.ndarray:
    """Convert continuous xyxy pixel boxes to ``fmt`` (float64 copy); sizes as for :func:`to_xyxy`."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    if fmt in NORMALIZED_FORMATS:
        return from_xyxy(b / _scale(width, height, len(b), fmt), pixel_format(fmt))
    if fmt == "xyxy":
        return b
    if fmt == "xyxy_inclusive":
        b[:, 2:] -= 1.0
        return b
    if fmt == "xywh":
        b[:, 2:] -= b[:, :2]
        return b
    if fmt == "cxcywh":
        size = b[:, 2:] - b[:, :2]
        return np.concatenate([b[:, :2] + size / 2.0, size], axis=1)
    raise ValueError(f"unknown box format {fmt!r}")


def area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes (0 when both are empty)."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, ix) * max(0.0, iy)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def shrink_iou(width: float, height: float, delta: float) -> float:
    """IoU of a ``width x height`` box with itself moved ``delta`` px inward on every edge.

    The floor a correct transform can reach when each edge is only known to ``delta``
    pixels: small boxes get a lower floor than large ones for the same pixel error.
    """
    if width <= 0 or height <= 0:
        return 0.0
    return max(0.0, width - 2 * delta) * max(0.0, height - 2 * delta) / (width * height)


def classify(
    boxes_xyxy: np.ndarray, width: float, height: float, *,
    min_size: float = 0.0, tolerance: float = BOUNDS_TOLERANCE_PX,
) -> np.ndarray:
    """Outcome index (into :data:`OUTCOMES`) of each box on a ``width x height`` canvas.

    ``degenerate``: zero or negative width or height (or not finite), e.g. a box whose
    object was cropped away and that was clamped to a line. ``out_of_bounds``: reaches
    more than ``tolerance`` px outside the canvas, e.g. boxes not clipped after a crop or
    left in the old coordinates after a resize. ``clipped``: valid, but touching the
    canvas border, so part of the object may have been cut off. ``kept``: the rest.
    """
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    out = np.zeros(len(b), dtype=np.int64)  # kept
    if len(b) == 0:
        return out
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    finite = np.isfinite(b).all(axis=1)
    degenerate = ~finite | (w <= min_size) | (h <= min_size)
    oob = (
        (b[:, 0] < -tolerance) | (b[:, 1] < -tolerance)
        | (b[:, 2] > width + tolerance) | (b[:, 3] > height + tolerance)
    )
    touching = (
        (b[:, 0] <= tolerance) | (b[:, 1] <= tolerance)
        | (b[:, 2] >= width - tolerance) | (b[:, 3] >= height - tolerance)
    )
    out[touching] = OUTCOMES.index("clipped")
    out[oob] = OUTCOMES.index("out_of_bounds")
    out[degenerate] = OUTCOMES.index("degenerate")
    return out
