"""Alignment probe: do the boxes go where the pixels go?

A probe image is black with one box region painted white (every channel equal, so hue,
saturation and grayscale changes leave it alone; brightness, contrast and normalization
keep it the brightest thing in the image). It goes through the user's joint transform
with its boxes. Afterwards the white pixels show where the object really went (the
*evidence*), and the transform's box for that object shows where the label went. One
marked box per trial keeps identity unambiguous (labels are unique per box, and across
the batch in batch mode); many trials cover the random parameters.

How evidence and box are compared, and why the tolerances are what they are
(measurements over >10,000 trials of correct transforms; docs/boxes.md):

- **Axis-aligned regions** (flip, crop, resize, translate, quarter turns): each edge of
  the white region is measured to a small fraction of a pixel from the coverage of the
  pixels across it (an edge at 10.3 leaves its boundary pixel 70% covered, and
  interpolation spreads but conserves that coverage). Correct transforms agree with
  their boxes to <= 0.05 px (bilinear resize) and <= 0.4 px (random resized crops), so
  an edge more than ``EDGE_TOLERANCE_PX`` = 0.5 px off disagrees about the pixel grid:
  the flip off-by-one (``W - x`` vs ``W - 1 - x``) is exactly 1 px. Where the image was
  resampled without interpolation (nearest), an edge is only known to the pixel and
  PyTorch's "nearest" picks the top-left source pixel, so such an edge gets
  ``NEAREST_EXTRA_PX`` = 1 px more (measured up to 0.98 px).
- **Rotated or sheared regions**: the box a transform should produce is the enclosing
  box of the rotated region (what torchvision and albumentations' default compute), not
  a box with IoU 1 to the object. The white region's own enclosing box is that expected
  box, less what interpolation and thresholding shave off the sharp corner tips: at
  most 1.0 px per edge measured at scale 1 (1.5 px after a 2x upscale), so the tolerance
  is ``ROTATED_EDGE_PX`` = 1.5 px times the upscaling. The per-box IoU floor is the IoU
  of the box with every edge moved in by that tolerance
  (:func:`prepwatch.checks.boxes.formats.shrink_iou`): a 16 px box may reach 0.66, a 60 px
  box 0.90. The region's centroid, which interpolation preserves (measured within
  0.08 px bilinear, 0.27 px nearest), must also sit at the box centre (a parallelogram's
  centroid is the centre of its enclosing box) within ``CENTROID_TOLERANCE_PX`` = 2 px;
  the margin covers perspective warps, whose regions are not parallelograms. A box left
  unrotated by a few degrees fails this long before its IoU drops.
- **Regions cut by the image border**: the transform clamps the enclosing box of the
  whole rotated box, which may reach past the visible part, so only containment is
  required (the visible object must lie inside its box, within the tolerance).

Each trial ends ``aligned``, ``misaligned`` (with a kind: iou, offset, out_of_bounds,
foreign, phantom) or ``inconclusive`` (nothing to compare: the box was dropped, or the
object vanished next to a clamped box). Limits: transforms that occlude or invert
pixels (RandomErasing, cutout, solarize, invert) hide or flip the mark; probe the
geometric part of such pipelines. ElasticTransform moves only box corners, so the probe
reports its real misalignment of a few pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from prepwatch.checks.boxes.adapters import Form, ProbeInput, ProbeOutput, TransformAdapter
from prepwatch.checks.boxes.evidence import Evidence, measure_region
from prepwatch.checks.boxes.formats import (
    BOUNDS_TOLERANCE_PX,
    OUTCOMES,
    check_format,
    is_normalized,
    pixel_format,
)
from prepwatch.checks.boxes.judge import TrialResult, judge
from prepwatch.checks.boxes.tolerances import MISALIGNMENT_KINDS, RESULTS
from prepwatch.checks.common.rng import isolated_rng


# ---------------------------------------------------------------------------------------
# Probe layouts and runs
# ---------------------------------------------------------------------------------------
def make_sample(
    rng: np.random.Generator, width: int, height: int, label_base: int = 0, max_boxes: int = 4,
) -> tuple[ProbeInput, int]:
    """A probe sample: 1..max_boxes integer boxes, one of them painted white."""
    n = int(rng.integers(1, max_boxes + 1))
    boxes = np.zeros((n, 4), dtype=np.float64)
    for i in range(n):
        bw = int(rng.integers(max(6, int(0.12 * width)), max(7, int(0.45 * width)) + 1))
        bh = int(rng.integers(max(6, int(0.12 * height)), max(7, int(0.45 * height)) + 1))
        bw, bh = min(bw, width), min(bh, height)
        x1 = int(rng.integers(0, width - bw + 1))
        y1 = int(rng.integers(0, height - bh + 1))
        boxes[i] = (x1, y1, x1 + bw, y1 + bh)
    marked = int(rng.integers(n))
    image = np.zeros((3, height, width), dtype=np.float32)
    x1, y1, x2, y2 = (int(v) for v in boxes[marked])
    image[:, y1:y2, x1:x2] = 1.0
    labels = np.arange(label_base, label_base + n, dtype=np.int64)
    return ProbeInput(image=image, boxes=boxes, labels=labels), marked


@dataclass
class ProbeReport:
    """Outcome of a probe run: per-trial verdicts and their summary."""

    trials: list[TrialResult]
    form: Form | None = None  # what the transform was handed

    def count(self, result: str) -> int:
        return sum(1 for t in self.trials if t.result == result)

    @property
    def aligned(self) -> int:
        return self.count("aligned")

    @property
    def misaligned(self) -> int:
        return self.count("misaligned")

    @property
    def inconclusive(self) -> int:
        return self.count("inconclusive")

    @property
    def ok(self) -> bool:
        """No misaligned trial and at least half of the trials could be judged."""
        return self.misaligned == 0 and self.inconclusive * 2 <= len(self.trials)

    def kinds(self) -> dict[str, int]:
        out = dict.fromkeys(MISALIGNMENT_KINDS, 0)
        for t in self.trials:
            if t.kind:
                out[t.kind] += 1
        return out

    def outcomes(self) -> dict[str, int]:
        out = dict.fromkeys(OUTCOMES, 0)
        for t in self.trials:
            for k, v in t.outcomes.items():
                out[k] += v
        return out

    def ious(self) -> list[float]:
        return [t.iou for t in self.trials if t.iou is not None]

    def worst(self, k: int = 5) -> list[TrialResult]:
        """Misaligned trials first (lowest IoU first), then the lowest-IoU aligned ones."""
        def key(t: TrialResult) -> tuple[int, float]:
            rank = {"misaligned": 0, "aligned": 1, "inconclusive": 2}[t.result]
            return rank, t.iou if t.iou is not None else 2.0

        return sorted(self.trials, key=key)[:k]


class _NormalizedAdapter(TransformAdapter):
    """Hands plain callables boxes as fractions of the image (``*_norm`` formats).

    The base adapter works in the pixel format the normalized one is a fraction of; boxes
    are divided by the input size on the way in and multiplied by the output image's size
    on the way out. ``tv_tensors.BoundingBoxes`` are always pixels and pass untouched.
    """

    def _boxes(self, boxes: np.ndarray, height: int, width: int) -> Any:
        if self.tv_tensors:
            return super()._boxes(boxes, height, width)
        scaled = np.asarray(boxes, dtype=np.float64) / np.array([width, height, width, height])
        return super()._boxes(scaled, height, width)

    def _read(self, image: Any, boxes: Any, labels: Any) -> ProbeOutput:
        out = super()._read(image, boxes, labels)
        if out.canvas_size is None:
            h, w = out.gray.shape
            out.boxes = out.boxes * np.array([w, h, w, h], dtype=np.float64)
        return out


def _adapter(transform: Callable[..., Any], box_format: str, **options: Any) -> TransformAdapter:
    check_format(box_format, normalized=True)
    if is_normalized(box_format):
        return _NormalizedAdapter(transform, box_format=pixel_format(box_format), **options)
    return TransformAdapter(transform, box_format=box_format, **options)


class Probe:
    """Pushes marked probe images through a transform; reusable for online probing."""

    def __init__(
        self,
        transform: Callable[..., Any],
        *,
        image_size: tuple[int, int] = (128, 96),
        call: str = "auto",
        box_format: str = "xyxy",
        image_kind: str | None = None,
        tv_tensors: bool | None = None,
        batch_size: int = 4,
        max_boxes: int = 4,
        seed: int = 0,
    ) -> None:
        if max_boxes < 1:
            raise ValueError("max_boxes must be >= 1")
        self.set_image_size(image_size)
        self.adapter = _adapter(
            transform, box_format, call=call, image_kind=image_kind, tv_tensors=tv_tensors,
        )
        self.batch_size = max(1, int(batch_size)) if self.adapter.call == "batch" else 1
        self.max_boxes = max_boxes
        self.seed = int(seed)
        self._rng = np.random.default_rng(seed)
        self._calls = 0

    @property
    def form(self) -> Form | None:
        """What the transform was handed (detected on the first run unless both
        ``image_kind`` and ``tv_tensors`` were given); None before the first run."""
        return self.adapter.form

    def set_image_size(self, image_size: tuple[int, int]) -> None:
        """Size (width, height) of the probe images from now on."""
        width, height = (int(v) for v in image_size)
        if width < 16 or height < 16:
            raise ValueError(f"image_size must be at least 16x16 pixels, got {width}x{height}")
        self.width, self.height = width, height

    def run(self, trials: int, keep_images: int = 0) -> ProbeReport:
        """Run ``trials`` trials (rounded up to whole batches in batch mode).

        Transform randomness is drawn under :func:`isolated_rng` with a seed derived from
        the probe's own seed, so runs are reproducible and the caller's RNG is untouched.
        ``keep_images``: keep inputs and outputs of up to this many worst trials.
        """
        results: list[TrialResult] = []
        while len(results) < trials:
            samples, marks = [], []
            for i in range(self.batch_size):
                s, m = make_sample(
                    self._rng, self.width, self.height,
                    label_base=i * self.max_boxes, max_boxes=self.max_boxes,
                )
                samples.append(s)
                marks.append(m)
            with isolated_rng(self.seed * 1_000_003 + self._calls):
                outputs = self.adapter(samples)
            self._calls += 1
            for s, m, o in zip(samples, marks, outputs):
                oh, ow = o.gray.shape
                scale = max(ow / self.width, oh / self.height)
                r = judge(s, m, o, scale)
                r.index, r.marked = len(results), m
                if keep_images:
                    r.sample, r.output = s, o
                results.append(r)
        report = ProbeReport(results, self.adapter.form)
        if keep_images:
            keep = {id(t) for t in report.worst(keep_images)}
            for t in results:
                if id(t) not in keep:
                    t.sample = t.output = None
        return report


def check_transform(
    transform: Callable[..., Any], trials: int = 200, *, keep_images: int = 0, **options: Any,
) -> ProbeReport:
    """Probe ``transform`` ``trials`` times; options as for :class:`Probe`."""
    if trials < 1:
        raise ValueError("trials must be >= 1")
    return Probe(transform, **options).run(trials, keep_images=keep_images)


__all__ = [
    "BOUNDS_TOLERANCE_PX",
    "MISALIGNMENT_KINDS",
    "RESULTS",
    "Evidence",
    "Form",
    "Probe",
    "ProbeReport",
    "TrialResult",
    "check_transform",
    "judge",
    "make_sample",
    "measure_region",
]
