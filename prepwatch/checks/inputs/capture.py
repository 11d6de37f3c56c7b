"""Contract capture at training: sampled, copied off the device, reduced in a thread.

The training loop pays, on a sampled step, for one strided slice of a few images
and an asynchronous copy (pinned memory and a CUDA event on a GPU, so the loop
never waits for the device); on other steps for one integer increment. A daemon
thread reduces the copies into bounded reservoirs: per-image statistics (for the
spread the guard's tolerances come from), each batch's extremes, a pixel sample
for percentiles, and running sums for the pooled mean and std.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import numpy as np
import torch

from prepwatch.checks.common.background import BackgroundWorker
from prepwatch.checks.inputs.contract import Recorded
from prepwatch.checks.inputs.stats import ImageStats, dtype_name, grid, grid_stride, image_stats

log = logging.getLogger("prepwatch")

PIXELS_PER_BATCH = 512      # grid pixels per channel taken from each recorded batch
PIXEL_RESERVOIR = 65536     # per channel: percentiles to ~0.1% resolution
BATCH_RESERVOIR = 2048      # recorded batches whose extremes are kept


class _Reservoir:
    """Uniform sample of rows from a stream (Algorithm R), bounded to ``size`` rows."""

    def __init__(self, size: int, width: int, rng: np.random.Generator) -> None:
        self.rows = np.empty((size, width), dtype=np.float64)
        self.filled = 0
        self.seen = 0
        self._rng = rng

    def add(self, rows: np.ndarray) -> None:
        size = self.rows.shape[0]
        for row in rows:
            if self.filled < size:
                self.rows[self.filled] = row
                self.filled += 1
            else:
                j = int(self._rng.integers(0, self.seen + 1))
                if j < size:
                    self.rows[j] = row
            self.seen += 1

    def values(self) -> np.ndarray:
        return self.rows[: self.filled].copy()


class InputRecorder:
    """Accumulates training input statistics; ``submit`` is the only hot-path call."""

    def __init__(
        self, *, layout: str | None, images_per_sample: int, max_images: int, seed: int,
        report: Callable[[BaseException], None],
        on_batch: Callable[[ImageStats], None] | None = None,
    ) -> None:
        self.layout = layout
        self.images_per_sample = images_per_sample
        self.max_images = max_images
        self._rng = np.random.default_rng(seed)
        self._report = report
        self._on_batch = on_batch
        self._worker: BackgroundWorker[tuple[Any, ...]] = BackgroundWorker(
            "prepwatch-input-capture", lambda item: self._process(*item), capacity=32,
            on_error=report,
        )
        self._lock = threading.Lock()
        self._closed = False
        self._warned_drop = False
        self._reset_state(None)

    def _reset_state(self, channels: int | None) -> None:
        self.channels = channels
        self.images: _Reservoir | None = None
        self.batches: _Reservoir | None = None
        self.pixels: _Reservoir | None = None
        self.count = 0.0
        self.total = self.total_sq = self.low = self.high = None
        self.batches_seen = 0
        self.images_seen = 0
        self.dtype = ""
        self.height = self.width = 0

    # -- hot path ----------------------------------------------------------------------
    @torch.no_grad()
    def submit(self, x: torch.Tensor) -> None:
        """Copy a strided slice of ``x`` for the worker thread; never blocks the loop."""
        if self._closed:
            return
        if not torch.is_tensor(x):
            raise TypeError(f"record() takes the model's input tensor, got {type(x).__name__}")
        if x.dim() not in (3, 4):
            raise ValueError(
                f"record() takes an image batch (N, C, H, W) or (N, H, W, C), got shape "
                f"{tuple(x.shape)}"
            )
        layout = self.layout or infer_layout(x)
        if layout is None:
            raise ValueError(
                f"cannot tell the channel axis of a tensor of shape {tuple(x.shape)}; pass "
                "layout='NCHW' or 'NHWC' to watch.inputs()"
            )
        if self.layout is None:
            self.layout = layout
        view = x if x.dim() == 4 else x.unsqueeze(0)
        if layout == "NHWC":
            view = view.permute(0, 3, 1, 2)
        height, width = int(view.shape[2]), int(view.shape[3])
        xs = grid(view[: self.images_per_sample].detach(), grid_stride(height, width))
        event = None
        if xs.is_cuda:
            host = torch.empty(xs.shape, dtype=xs.dtype, pin_memory=True)
            host.copy_(xs, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = xs.clone()
        item = (host, event, dtype_name(x.dtype), height, width, int(x.shape[0]))
        if not self._worker.submit(item):
            if not self._warned_drop:
                self._warned_drop = True
                log.warning(
                    "prepwatch: input capture is behind (a sampled batch was dropped); "
                    "raise sample_every in watch.inputs() to record less often"
                )

    # -- worker thread ---------------------------------------------------------------
    def _process(
        self, xs: torch.Tensor, event: Any, dtype: str, height: int, width: int, batch: int,
    ) -> None:
        if event is not None:
            event.synchronize()
        stats = image_stats(xs)
        if not stats.finite():
            return  # a NaN batch says nothing about the contract; the loss will say it
        c = stats.channels
        flat = xs.to(torch.float64).transpose(0, 1).reshape(c, -1).numpy()
        with self._lock:
            if self.channels != c:
                if self.channels is not None:
                    log.warning(
                        "prepwatch: recorded inputs changed from %s to %s channels; "
                        "starting the contract over", self.channels, c,
                    )
                self._reset_state(c)
                self.images = _Reservoir(self.max_images, 4 * c, self._rng)
                self.batches = _Reservoir(BATCH_RESERVOIR, 2 * c, self._rng)
                self.pixels = _Reservoir(PIXEL_RESERVOIR, c, self._rng)
                self.total = np.zeros(c)
                self.total_sq = np.zeros(c)
                self.low = np.full(c, np.inf)
                self.high = np.full(c, -np.inf)
            assert self.images is not None and self.batches is not None
            assert self.pixels is not None
            self.images.add(np.concatenate((stats.mean, stats.std, stats.min, stats.max), axis=1))
            self.batches.add(
                np.concatenate((stats.min.min(axis=0), stats.max.max(axis=0)))[None, :]
            )
            take = min(PIXELS_PER_BATCH, flat.shape[1])
            cols = self._rng.choice(flat.shape[1], size=take, replace=False)
            self.pixels.add(flat[:, cols].T)
            self.count += flat.shape[1]
            self.total += flat.sum(axis=1)
            self.total_sq += (flat**2).sum(axis=1)
            self.low = np.minimum(self.low, stats.min.min(axis=0))
            self.high = np.maximum(self.high, stats.max.max(axis=0))
            self.batches_seen += 1
            self.images_seen += batch
            self.dtype = self.dtype or dtype
            self.height, self.width = height, width
        if self._on_batch is not None:
            self._on_batch(stats)

    # -- control -----------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted batch is reduced; False on timeout."""
        return self._worker.flush(timeout)

    @property
    def dropped(self) -> int:
        """Sampled batches dropped because the reduction thread was behind."""
        return self._worker.dropped

    def snapshot(self) -> Recorded:
        """A consistent copy of what was recorded, for building a contract."""
        with self._lock:
            if self.images is None or self.channels is None:
                raise ValueError("no training batches recorded yet: call monitor.record(x) first")
            c = self.channels
            rows = self.images.values()
            ext = self.batches.values()  # type: ignore[union-attr]
            return Recorded(
                images=ImageStats(rows[:, :c], rows[:, c:2 * c], rows[:, 2 * c:3 * c],
                                  rows[:, 3 * c:]),
                batch_min=ext[:, :c], batch_max=ext[:, c:],
                pixels=self.pixels.values().T,  # type: ignore[union-attr]
                count=self.count, total=self.total.copy(),  # type: ignore[union-attr]
                total_sq=self.total_sq.copy(),  # type: ignore[union-attr]
                low=self.low.copy(), high=self.high.copy(),  # type: ignore[union-attr]
                batches=self.batches_seen, images_seen=self.images_seen,
                dtype=self.dtype, layout=self.layout or "NCHW",
                height=self.height, width=self.width,
            )

    @property
    def recorded_batches(self) -> int:
        return self.batches_seen

    def close(self, timeout: float = 5.0) -> None:
        self._closed = True
        self._worker.close(timeout)


def infer_layout(x: torch.Tensor) -> str | None:
    """NCHW or NHWC from the shape: the channel axis is the small one (1, 3 or 4)."""
    if x.dim() == 3:
        first, last = int(x.shape[0]), int(x.shape[2])
    elif x.dim() == 4:
        first, last = int(x.shape[1]), int(x.shape[3])
    else:
        return None
    small = (1, 2, 3, 4)
    if first in small and last not in small:
        return "NCHW"
    if last in small and first not in small:
        return "NHWC"
    return None
