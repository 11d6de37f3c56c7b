"""Synthetic images that are cheap to make but real work to load: one blob per class."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

import prepwatch

NUM_CLASSES = 10
IMAGE_BYTES = 32 * 32 * 3
SHARD_SIZE = 512  # samples per shard file (1.5 MiB)
READS_PER_OPEN = 64
MEAN = (0.45, 0.45, 0.45)
STD = (0.25, 0.25, 0.25)
# Class c: a blob of colour PALETTE[c] at position POSITIONS[c] on textured noise.
PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190]],
    dtype=np.float32,
)
POSITIONS = [(8, 8), (8, 24), (24, 8), (24, 24), (16, 16), (8, 16), (16, 8), (24, 16), (16, 24), (12, 20)]


def render(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """An HWC uint8 image of class ``label``."""
    image = rng.normal(110, 35, size=(size, size, 3))
    cy, cx = POSITIONS[label]
    cy += int(rng.integers(-3, 4))
    cx += int(rng.integers(-3, 4))
    radius = float(rng.uniform(4, 7))
    yy, xx = np.mgrid[:size, :size]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    image[mask] = PALETTE[label] + rng.normal(0, 12, size=(int(mask.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def normalize(image_u8: np.ndarray) -> torch.Tensor:
    """HWC uint8 -> CHW float, ImageNet-style normalized with the demo's statistics."""
    x = torch.from_numpy(image_u8).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (x - mean) / std


class SyntheticShapes(Dataset):
    """Deterministic per index. ``slow_read_s`` and ``slow_decode_s`` make it a real bottleneck:
    a sleep (storage latency) and busy CPU work (decode), both per sample."""

    def __init__(
        self, size: int = 4096, seed: int = 0, augment: bool = True,
        slow_read_s: float = 0.0, slow_decode_s: float = 0.0, shard_dir: Optional[Path] = None,
    ) -> None:
        self.size = size
        self.seed = seed
        self.augment = augment
        self.slow_read_s = slow_read_s
        self.slow_decode_s = slow_decode_s
        self.labels = np.random.default_rng(seed).integers(0, NUM_CLASSES, size=size)
        # Rendered once: a healthy demo's workers then do what real ones do per sample
        # (fetch, light decode, augment, normalize), far below the model step.
        self.images = np.stack(
            [render(int(c), np.random.default_rng((seed, i))) for i, c in enumerate(self.labels)]
        )
        # With shard_dir the pixels are read back from a few large files, as a sharded
        # dataset would be: a worker keeps a shard open for READS_PER_OPEN samples, so the
        # IO signals (opens/s, bytes per open, open latency) have healthy values to show.
        self.shard_dir = shard_dir
        self._handles: dict[int, list[Any]] = {}  # shard -> [file, reads since open]
        if shard_dir is not None:
            shard_dir.mkdir(parents=True, exist_ok=True)
            for shard, start in enumerate(range(0, size, SHARD_SIZE)):
                (shard_dir / f"shard-{shard:03d}.bin").write_bytes(
                    self.images[start : start + SHARD_SIZE].tobytes()
                )

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}  # file handles stay in the process that opened them
        return state

    def _read(self, index: int) -> np.ndarray:
        shard, offset = divmod(index, SHARD_SIZE)
        entry = self._handles.get(shard)
        if entry is None or entry[1] >= READS_PER_OPEN:
            if entry is not None:
                entry[0].close()
            path = self.shard_dir / f"shard-{shard:03d}.bin"  # type: ignore[operator]
            entry = self._handles[shard] = [prepwatch.timed_open(path, "rb"), 0]
        f = entry[0]
        f.seek(offset * IMAGE_BYTES)
        entry[1] += 1
        # A writable buffer: torch.from_numpy warns (once per process) on a read-only one.
        return np.frombuffer(bytearray(f.read(IMAGE_BYTES)), dtype=np.uint8).reshape(32, 32, 3)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = int(self.labels[index])
        rng = np.random.default_rng((self.seed, index))
        with prepwatch.stage("read"):
            raw = self._read(index) if self.shard_dir is not None else self.images[index]
            if self.slow_read_s:
                time.sleep(self.slow_read_s)
        with prepwatch.stage("decode"):
            image = raw
            if self.slow_decode_s:
                _busy(self.slow_decode_s)
        with prepwatch.stage("transform"):
            if self.augment and rng.random() < 0.5:
                image = image[:, ::-1].copy()
            x = normalize(image)
        return x, label


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    a = np.ones(64)
    while time.perf_counter() < end:
        a = np.sqrt(a * 1.0001)
