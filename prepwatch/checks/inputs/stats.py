"""Per-image channel statistics: the one estimator shared by capture and guard.

Training capture and the serving guard must measure a batch the same way, or the
contract would compare two different estimators. Both take a strided pixel grid
(every ``k``-th row and column, ``k`` chosen so an image keeps about 4,096 pixels
per channel) and reduce it to four numbers per image and channel: mean, std, min
and max. Everything downstream (contract, diagnosis) works on those ``(N, C)``
arrays, so a check never makes another pass over the pixels unless a batch is
already suspect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# Pixels per channel per image the grid keeps: enough that a per-image mean on the
# grid sits within ~1% of a standard deviation of the full-image mean, few enough
# that the check on a 224x224 image reads ~1/9 of it.
TARGET_PIXELS = 4096

VIOLATION_KINDS = ("scale_255", "double_scaled", "range", "channel_order", "per_image", "dtype", "layout")
"""Violation kinds, in the order they are reported."""

FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})


def grid_stride(height: int, width: int, target: int = TARGET_PIXELS) -> int:
    """Row/column stride that keeps at least ``target`` pixels of an image."""
    return max(1, int(math.sqrt(height * width / float(target))))


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass
class ImageStats:
    """Per-image, per-channel statistics of a batch on the pixel grid, float64 ``(N, C)``."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray

    @property
    def n(self) -> int:
        return int(self.mean.shape[0])

    @property
    def channels(self) -> int:
        return int(self.mean.shape[1])

    def pooled_mean(self) -> np.ndarray:
        """Channel mean over the batch (every image has the same pixel count)."""
        return self.mean.mean(axis=0)

    def global_mean(self) -> np.ndarray:
        """Per-image mean over all channels, ``(N,)``."""
        return self.mean.mean(axis=1)

    def global_std(self) -> np.ndarray:
        """Per-image std over all channels and pixels, ``(N,)``."""
        second = (self.std**2 + self.mean**2).mean(axis=1)
        return np.sqrt(np.maximum(second - self.global_mean() ** 2, 0.0))

    def finite(self) -> bool:
        return bool(
            np.isfinite(self.mean).all() and np.isfinite(self.std).all()
            and np.isfinite(self.min).all() and np.isfinite(self.max).all()
        )


def grid(x: torch.Tensor, stride: int) -> torch.Tensor:
    """The strided pixel grid of an ``(N, C, H, W)`` batch (a view, no copy)."""
    return x[:, :, ::stride, ::stride] if stride > 1 else x


@torch.no_grad()
def image_stats(xs: torch.Tensor) -> ImageStats:
    """Statistics of an already gridded ``(N, C, h, w)`` batch; one small host copy.

    Integer and half-precision inputs are reduced in float32. On a GPU tensor the
    four ``(N, C)`` results are stacked and copied to the host once.
    """
    if xs.dtype != torch.float32 and xs.dtype != torch.float64:
        xs = xs.to(torch.float32)
    n, c = int(xs.shape[0]), int(xs.shape[1])
    flat = xs.reshape(n, c, -1)
    var, mean = torch.var_mean(flat, dim=-1, correction=0)
    mn, mx = torch.aminmax(flat, dim=-1)
    packed = torch.stack((mean, var, mn, mx)).to("cpu", torch.float64).numpy()
    return ImageStats(
        mean=packed[0], std=np.sqrt(np.maximum(packed[1], 0.0)), min=packed[2], max=packed[3]
    )


@torch.no_grad()
def fraction_outside(xs: torch.Tensor, low: np.ndarray, high: np.ndarray) -> float:
    """Share of grid values outside ``[low_c, high_c]`` per channel (one extra pass).

    Only called on batches whose extremes already left the contract's range, to tell
    a few overshooting pixels from a whole batch on the wrong scale.
    """
    if xs.dtype != torch.float32 and xs.dtype != torch.float64:
        xs = xs.to(torch.float32)
    shape = (1, -1, 1, 1)
    lo = torch.as_tensor(low, dtype=xs.dtype, device=xs.device).view(shape)
    hi = torch.as_tensor(high, dtype=xs.dtype, device=xs.device).view(shape)
    outside = ((xs < lo) | (xs > hi)).sum()
    return float(outside.item()) / max(1, xs.numel())
