"""Datasets for real DataLoader tests (module level, so spawn workers can import them)."""

from __future__ import annotations

import time

import torch
from torch.utils.data import Dataset, IterableDataset

import prepwatch


class TensorPairs(Dataset):
    """(3x8x8 image, label); ``delay`` seconds of sleep per sample inside the worker."""

    def __init__(self, n: int = 64, delay: float = 0.0) -> None:
        self.n = n
        self.delay = delay

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if self.delay:
            with prepwatch.stage("read"):
                time.sleep(self.delay)
        return torch.full((3, 8, 8), float(i)), i % 10


class DictSamples(TensorPairs):
    def __getitem__(self, i: int):
        x, y = super().__getitem__(i)
        return {"image": x, "label": y}


class Stream(IterableDataset):
    def __init__(self, n: int = 64, delay: float = 0.0) -> None:
        self.n = n
        self.delay = delay

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        start, step = (info.id, info.num_workers) if info else (0, 1)
        for i in range(start, self.n, step):
            if self.delay:
                time.sleep(self.delay)
            yield torch.zeros(4), i
