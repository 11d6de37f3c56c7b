"""Sampled overlays: augmented batches drawn with their boxes, written as PNG grids.

Looking at augmented batches with the boxes drawn is how people catch label bugs by
eye; this makes it a habit that costs nothing. Pillow is optional (``prepwatch[overlays]``):
without it overlays switch off with one log line and ``prepwatch_overlays_available 0``.

Rendering and writing run on one background thread; the training loop only copies up to
``max_images`` images to the CPU on the steps it samples. If the writer is still busy
with the previous grid, the new one is skipped rather than queued.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch

from prepwatch.checks.common.background import BackgroundWorker

log = logging.getLogger("prepwatch")

LATEST = "latest.png"
_PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)


def pillow_available() -> bool:
    try:
        import PIL.Image  # noqa: F401
        import PIL.ImageDraw  # noqa: F401
    except ImportError:
        return False
    return True


def to_display(image: Any) -> np.ndarray:
    """A model-input image (CHW or HWC, any scale or normalization) as uint8 HWC RGB.

    Each image is stretched to its own 1st..99th percentile: the point is to see where
    the boxes sit, and normalized tensors have no fixed range to undo.
    """
    if isinstance(image, torch.Tensor):
        arr = image.detach().cpu().as_subclass(torch.Tensor).to(torch.float32).numpy()
    else:
        arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)
    elif arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)  # ambiguous tiny image: assume CHW (torch layout)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    arr = arr[..., :3]
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    lo, hi = np.percentile(finite, [1, 99])
    if hi - lo < 1e-12:
        hi = lo + 1.0
    out = np.clip((np.nan_to_num(arr, nan=lo) - lo) / (hi - lo), 0.0, 1.0) * 255.0
    return out.astype(np.uint8)


@dataclass
class Panel:
    """One cell of a grid: an image and the boxes to draw on it (xyxy, continuous)."""

    image: np.ndarray  # uint8 HWC
    boxes: Sequence[Sequence[float]] = ()
    labels: Sequence[str] = ()
    colors: Sequence[tuple[int, int, int]] = ()
    caption: str = ""


PanelSource = Union[Sequence[Panel], Callable[[], Sequence[Panel]]]


def label_color(label: int) -> tuple[int, int, int]:
    return _PALETTE[int(label) % len(_PALETTE)]


def render_grid(panels: Sequence[Panel], *, cell: int = 192, columns: int = 4) -> Any:
    """Draw panels into one PIL image; each image is scaled to fit a ``cell`` square."""
    from PIL import Image, ImageDraw

    columns = max(1, min(columns, len(panels)))
    rows = (len(panels) + columns - 1) // columns
    caption_h = 14
    grid = Image.new("RGB", (columns * cell, rows * (cell + caption_h)), (32, 32, 32))
    draw = ImageDraw.Draw(grid)
    for i, panel in enumerate(panels):
        h, w = panel.image.shape[:2]
        scale = min(cell / max(w, 1), cell / max(h, 1))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        tile = Image.fromarray(panel.image).resize(size, Image.NEAREST)
        ox, oy = (i % columns) * cell, (i // columns) * (cell + caption_h)
        grid.paste(tile, (ox, oy))
        for j, box in enumerate(panel.boxes):
            color = panel.colors[j] if j < len(panel.colors) else (255, 255, 0)
            x1, y1, x2, y2 = (float(v) for v in box)
            if not all(np.isfinite([x1, y1, x2, y2])):
                continue
            rect = [ox + x1 * scale, oy + y1 * scale, ox + x2 * scale - 1, oy + y2 * scale - 1]
            rect[2], rect[3] = max(rect[0], rect[2]), max(rect[1], rect[3])
            # A dark halo keeps the box visible on any background, even its own colour.
            halo = [rect[0] - 1, rect[1] - 1, rect[2] + 1, rect[3] + 1]
            draw.rectangle(halo, outline=(0, 0, 0), width=3)
            draw.rectangle(rect, outline=color, width=1)
            if j < len(panel.labels) and panel.labels[j]:
                at = (rect[0] + 2, rect[1] + 1)
                draw.text((at[0] + 1, at[1] + 1), panel.labels[j], fill=(0, 0, 0))
                draw.text(at, panel.labels[j], fill=color)
        if panel.caption:
            draw.text((ox + 2, oy + cell + 1), panel.caption[: cell // 6], fill=(220, 220, 220))
    return grid


def save_png(image: Any, path: Path) -> None:
    """Write atomically: a reader (the HTTP server) never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class OverlayWriter:
    """Renders and writes grids on a background thread; keeps the last ``keep`` files.

    Each grid is written as ``overlay-<unix ms>-step<N>.png`` and copied to
    ``latest.png`` (atomically), which the agent's HTTP server exposes.
    """

    def __init__(
        self,
        directory: Path,
        *,
        keep: int = 20,
        on_written: Callable[[Path], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError(f"overlay_keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self._on_written = on_written
        self._on_error = on_error
        # One grid at a time: a grid that arrives while the previous one is still being
        # written is skipped rather than queued.
        self._worker: BackgroundWorker[tuple[int, PanelSource]] = BackgroundWorker(
            "prepwatch-overlays", lambda item: self.write_now(*item), capacity=1,
            on_error=on_error or _log_error,
        )
        self.written = 0

    def submit(self, step: int, panels: PanelSource) -> bool:
        """Hand a grid to the writer thread; False (skipped) if it is still busy.

        ``panels`` may be a callable that builds them, so even the conversion of images
        for display happens off the training loop.
        """
        return self._worker.submit((step, panels))

    @property
    def skipped(self) -> int:
        """Grids not written because the writer was still busy with the previous one."""
        return self._worker.dropped

    def write_now(self, step: int, panels: PanelSource) -> Path:
        """Render and write on the calling thread (tests, CLI)."""
        grid = render_grid(panels() if callable(panels) else panels)
        name = f"overlay-{int(time.time() * 1000):013d}-step{step:08d}.png"
        path = self.directory / name
        save_png(grid, path)
        save_png(grid, self.directory / LATEST)
        self._prune()
        self.written += 1
        if self._on_written is not None:
            self._on_written(path)
        return path

    def _prune(self) -> None:
        files = sorted(self.directory.glob("overlay-*.png"))
        for old in files[: max(0, len(files) - self.keep)]:
            try:
                old.unlink()
            except OSError:
                pass

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the queued grid (if any) is written; False on timeout."""
        return self._worker.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self._worker.close(timeout)


def _log_error(exc: BaseException) -> None:  # pragma: no cover - the monitor passes on_error
    log.warning("prepwatch: writing an overlay failed: %r", exc)
