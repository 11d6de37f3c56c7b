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

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from prepwatch.checks.boxes.adapters import ProbeInput, ProbeOutput, TransformAdapter
from prepwatch.checks.boxes.formats import (
    BOUNDS_TOLERANCE_PX,
    OUTCOMES,
    check_format,
    classify,
    iou,
    is_normalized,
    pixel_format,
    shrink_iou,
)
from prepwatch.checks.common.rng import isolated_rng

RESULTS = ("aligned", "misaligned", "inconclusive")
MISALIGNMENT_KINDS = ("iou", "offset", "out_of_bounds", "foreign", "phantom")

EDGE_TOLERANCE_PX = 0.5
NEAREST_EXTRA_PX = 1.0
ROTATED_EDGE_PX = 1.5
CENTROID_TOLERANCE_PX = 2.0
# A misalignment whose box still overlaps its object (IoU >= 0.5) by at most this many
# pixels is an "offset" (a convention slip); anything worse is "iou" (box off its object).
OFFSET_KIND_MAX_PX = 2.0
# A region whose centroid is this close to the centre of its enclosing box is treated as
# centrally symmetric (a parallelogram: any affine image of a rectangle).
SYMMETRY_PX = 0.5
# Below this many marked pixels a region is too small to measure.
MIN_EVIDENCE_PX = 4.0
# A kept box at least this large whose object left no marked pixels is a phantom; a
# smaller one may hold an object too faint to see after downscaling.
PHANTOM_MIN_AREA_PX = 16.0


# ---------------------------------------------------------------------------------------
# Evidence: where did the white pixels go?
# ---------------------------------------------------------------------------------------
@dataclass
class Evidence:
    present: bool
    uniform: bool = False
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    axis_aligned: bool = False
    hard_edges: tuple[bool, bool, bool, bool] = (False, False, False, False)
    touches_border: bool = False
    centroid: tuple[float, float] = (0.0, 0.0)
    symmetric: bool = False
    area: float = 0.0


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1)-square, separably (no SciPy needed)."""
    out = mask.copy()
    for axis in (0, 1):
        src = out.copy()
        n = src.shape[axis]
        for d in range(1, radius + 1):
            if d >= n:
                break
            lead = [slice(None)] * 2
            lag = [slice(None)] * 2
            lead[axis], lag[axis] = slice(d, None), slice(None, -d)
            out[tuple(lag)] |= src[tuple(lead)]
            out[tuple(lead)] |= src[tuple(lag)]
    return out


def measure_region(gray: np.ndarray, ramp: int = 2) -> Evidence:
    """Locate the marked (brightest) region of a transformed probe image.

    ``ramp`` is how many pixels an edge may be smeared over by interpolation (larger when
    the transform upscales). Work is confined to a window around the region.
    """
    lo, hi = float(gray.min()), float(gray.max())
    if not hi - lo > 1e-6 * max(1.0, abs(hi)):
        return Evidence(present=False, uniform=True)
    mask_full = gray >= (lo + hi) / 2
    rows = np.flatnonzero(mask_full.any(axis=1))
    cols = np.flatnonzero(mask_full.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    height, width = gray.shape
    # Window: the region plus room for its interpolation ramps.
    wr0, wc0 = max(0, r0 - ramp - 1), max(0, c0 - ramp - 1)
    wr1, wc1 = min(height, r1 + ramp + 2), min(width, c1 + ramp + 2)
    p = np.clip((gray[wr0:wr1, wc0:wc1] - lo) / (hi - lo), 0.0, 1.0)
    mask = mask_full[wr0:wr1, wc0:wc1]
    weights = p * _dilate(mask, ramp)
    mass = float(weights.sum())
    if mass < MIN_EVIDENCE_PX:
        return Evidence(present=False)
    ys = np.arange(wr0, wr1, dtype=np.float64) + 0.5
    xs = np.arange(wc0, wc1, dtype=np.float64) + 0.5
    cx = float((weights.sum(axis=0) * xs).sum() / mass)
    cy = float((weights.sum(axis=1) * ys).sum() / mass)
    touches = r0 == 0 or c0 == 0 or r1 == height - 1 or c1 == width - 1
    quantized = (float(c0), float(r0), float(c1 + 1), float(r1 + 1))
    qcx, qcy = (quantized[0] + quantized[2]) / 2, (quantized[1] + quantized[3]) / 2
    symmetric = abs(cx - qcx) <= SYMMETRY_PX and abs(cy - qcy) <= SYMMETRY_PX
    ev = Evidence(
        present=True, box=quantized, touches_border=touches, centroid=(cx, cy),
        symmetric=symmetric, area=mass,
    )
    outside = int(mask_full.sum()) - int(mask.sum())
    lr0, lr1, lc0, lc1 = r0 - wr0, r1 - wr0, c0 - wc0, c1 - wc0
    if outside == 0 and _is_axis_aligned(mask, lr0, lr1, lc0, lc1):
        ev.axis_aligned = True
        box, ev.hard_edges = _subpixel_edges(p, lr0, lr1, lc0, lc1, ramp)
        ev.box = (box[0] + wc0, box[1] + wr0, box[2] + wc0, box[3] + wr0)
    return ev


def _is_axis_aligned(mask: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> bool:
    """True when the region is a filled rectangle with straight, grid-aligned edges."""
    block = mask[r0 : r1 + 1, c0 : c1 + 1]
    inner = block[1:-1, 1:-1] if min(block.shape) > 2 else block
    if not inner.all():
        return False
    # Every inner row must reach both side columns, every inner column both end rows.
    if block.shape[0] > 2 and not (block[1:-1, 0].all() and block[1:-1, -1].all()):
        return False
    if block.shape[1] > 2 and not (block[0, 1:-1].all() and block[-1, 1:-1].all()):
        return False
    return bool(mask.sum() == block.sum())


def _edge_from_profile(profile: np.ndarray, start: int, rising: bool) -> float:
    """Sub-pixel edge from coverage: ``profile`` covers pixels ``start .. start+len-1``."""
    total = float(profile.sum())
    if rising:  # region extends to the right of the edge; last pixel fully inside
        return start + len(profile) - total
    return start + total  # region extends to the left; first pixel fully inside


def _subpixel_edges(
    p: np.ndarray, r0: int, r1: int, c0: int, c1: int, ramp: int,
) -> tuple[tuple[float, float, float, float], tuple[bool, bool, bool, bool]]:
    height, width = p.shape
    inner_rows = slice(r0 + 1, r1) if r1 - r0 >= 2 else slice(r0, r1 + 1)
    inner_cols = slice(c0 + 1, c1) if c1 - c0 >= 2 else slice(c0, c1 + 1)
    # Coverage per column (row), relative to the plateau: a region narrower than two
    # pixels never covers a pixel fully in the other direction.
    col_profile = np.median(p[inner_rows, :], axis=0)
    row_profile = np.median(p[:, inner_cols], axis=1)
    col_profile = np.clip(col_profile / max(float(col_profile.max()), 1e-6), 0.0, 1.0)
    row_profile = np.clip(row_profile / max(float(row_profile.max()), 1e-6), 0.0, 1.0)
    edges = []
    hard = []
    for profile, first, last, size in (
        (col_profile, c0, c1, width), (row_profile, r0, r1, height),
    ):
        mid = (first + last) // 2
        a, b = max(0, first - ramp), max(min(first + ramp, mid), first)
        lo_edge = _edge_from_profile(profile[a : b + 1], a, rising=True)
        a2, b2 = min(max(last - ramp, mid + 1), last), min(size - 1, last + ramp)
        hi_edge = _edge_from_profile(profile[a2 : b2 + 1], a2, rising=False)
        edges.append((lo_edge, hi_edge))
        hard.append((_is_hard(profile[a : b + 1]), _is_hard(profile[a2 : b2 + 1])))
    (x1, x2), (y1, y2) = edges
    (hx1, hx2), (hy1, hy2) = hard
    return (x1, y1, x2, y2), (hx1, hy1, hx2, hy2)


def _is_hard(profile: np.ndarray) -> bool:
    """No partially covered pixel: the image was moved by whole pixels or by nearest lookup."""
    return bool(np.all((profile < 0.02) | (profile > 0.98)))


# ---------------------------------------------------------------------------------------
# One trial: compare evidence with the transform's box
# ---------------------------------------------------------------------------------------
@dataclass
class TrialResult:
    result: str
    kind: str | None = None
    iou: float | None = None
    error_px: float | None = None  # worst edge error (axis-aligned) or centroid offset
    expected: tuple[float, float, float, float] | None = None  # evidence box
    got: tuple[float, float, float, float] | None = None  # transform's box
    canvas: tuple[int, int] = (0, 0)  # (W, H) of the output image
    note: str = ""
    outcomes: dict[str, int] = field(default_factory=dict)
    index: int = -1  # trial number within its run
    marked: int = -1  # which input box was painted
    sample: ProbeInput | None = None
    output: ProbeOutput | None = None


def _find_marked(
    out: ProbeOutput, sample: ProbeInput, marked: int, evidence: Evidence,
) -> tuple[int | None, str]:
    """Index of the marked box among the transform's boxes, or None when it was dropped."""
    if out.labels is not None and len(out.labels) == len(out.boxes):
        hits = np.flatnonzero(out.labels == sample.labels[marked])
        return (int(hits[0]), "") if len(hits) else (None, "")
    if len(out.boxes) == len(sample.boxes):
        return marked, ""
    if not evidence.present or len(out.boxes) == 0:
        return None, "no labels returned; box count changed"
    scores = [iou(evidence.box, tuple(b)) for b in out.boxes]
    return int(np.argmax(scores)), "no labels returned; matched by best IoU"


def judge(sample: ProbeInput, marked: int, out: ProbeOutput, scale: float = 1.0) -> TrialResult:
    """Verdict of one probe trial (the sample had box ``marked`` painted).

    ``scale``: output canvas size over input canvas size; with the marked box's own
    change of size it bounds how far interpolation smears an edge.
    """
    height, width = out.gray.shape
    zoom = max(scale, 1.0)
    evidence = measure_region(out.gray, _ramp(zoom))
    outcome_idx = classify(out.boxes, width, height)
    outcomes = {name: int((outcome_idx == i).sum()) for i, name in enumerate(OUTCOMES)}
    outcomes["dropped"] = max(0, len(sample.boxes) - len(out.boxes))
    res = TrialResult(result="aligned", canvas=(width, height), outcomes=outcomes)

    if out.labels is not None and len(out.labels):
        foreign = np.setdiff1d(out.labels, sample.labels)
        if len(foreign):
            res.result, res.kind = "misaligned", "foreign"
            res.note = f"labels {foreign[:4].tolist()} belong to other samples of the batch"
            res.expected = evidence.box if evidence.present else None
            return res
    index, res.note = _find_marked(out, sample, marked, evidence)
    if index is None:
        res.result = "inconclusive"
        res.note = res.note or "the transform dropped the marked box"
        res.expected = evidence.box if evidence.present else None
        return res
    got = tuple(float(v) for v in out.boxes[index])
    res.got = got  # type: ignore[assignment]
    src = sample.boxes[marked]
    box_zoom = max((got[2] - got[0]) / (src[2] - src[0]), (got[3] - got[1]) / (src[3] - src[1]))
    if np.isfinite(box_zoom) and _ramp(max(zoom, box_zoom)) != _ramp(zoom):
        zoom = max(zoom, box_zoom)
        evidence = measure_region(out.gray, _ramp(zoom))
    if evidence.present:
        res.expected = evidence.box
    box_outcome = OUTCOMES[int(outcome_idx[index])]
    if box_outcome == "out_of_bounds":
        res.result, res.kind = "misaligned", "out_of_bounds"
        res.iou = iou(evidence.box, got) if evidence.present else 0.0
        res.note = f"box {_fmt(got)} reaches outside the {width}x{height} image"
        return res
    box_area = max(0.0, got[2] - got[0]) * max(0.0, got[3] - got[1])
    if not evidence.present:
        if evidence.uniform and box_area >= 0.9 * width * height:
            res.result, res.note = "inconclusive", "uniform image; box covers it"
        elif box_outcome == "clipped":
            # An enclosing box clamped to the border may overlap the image while the
            # rotated object itself lies just outside it: not evidence of a bug.
            res.result, res.note = "inconclusive", "clamped box; its object may lie just outside"
        elif box_area >= PHANTOM_MIN_AREA_PX:
            res.result, res.kind, res.iou = "misaligned", "phantom", 0.0
            res.note = f"box {_fmt(got)} kept where the object is no longer visible"
        elif box_area > 0.0:
            res.result, res.note = "inconclusive", "box too small to see its object"
        else:
            res.note = "object and box both gone"
        return res
    if box_area <= 0.0:
        res.result, res.kind, res.iou = "misaligned", "iou", 0.0
        res.note = f"visible object ({evidence.area:.0f} px) but its box collapsed to {_fmt(got)}"
        return res

    res.iou = iou(evidence.box, got)
    failed, res.error_px, detail = _compare(evidence, got, zoom)
    if failed:
        res.result = "misaligned"
        gross = res.iou < 0.5 or (res.error_px or 0.0) > OFFSET_KIND_MAX_PX
        res.kind = "iou" if gross else "offset"
        res.note = detail
    return res


def _ramp(zoom: float) -> int:
    """Pixels an edge may be smeared over: two, plus the upscaling factor."""
    return 2 + int(math.ceil(min(zoom, 64.0)))


def _compare(evidence: Evidence, got: tuple[float, ...], zoom: float) -> tuple[bool, float | None, str]:
    """(failed, error in px, explanation) for a kept box against a visible object."""
    ev = evidence.box
    if evidence.axis_aligned:
        errors = [got[i] - ev[i] for i in range(4)]  # negative: box further left / up
        failed = False
        for i, err in enumerate(errors):
            tol = EDGE_TOLERANCE_PX
            if evidence.hard_edges[i] and abs(got[i] - round(got[i])) > 0.01:
                tol += NEAREST_EXTRA_PX
            if evidence.touches_border:
                # The visible part of a rotated object cut by the border can look like a
                # rectangle while its (correct) box still encloses the hidden corners:
                # only a box smaller than the visible object is wrong here.
                inward = err if i < 2 else -err
                failed = failed or inward > tol
            else:
                failed = failed or abs(err) > tol
        detail = ""
        if failed:
            names = ("left", "top", "right", "bottom")
            parts = [f"{n} {e:+.2f}" for n, e in zip(names, errors) if abs(e) > 0.05]
            detail = "box edge minus object edge: " + ", ".join(parts) + " px"
        return failed, max(abs(e) for e in errors), detail
    d = ROTATED_EDGE_PX * max(zoom, 1.0)
    if evidence.touches_border:
        excess = max(got[0] - ev[0], got[1] - ev[1], ev[2] - got[2], ev[3] - got[3], 0.0)
        if excess > d:
            return True, excess, f"visible object {_fmt(ev)} sticks out of its box {_fmt(got)}"
        return False, None, ""
    w, h = got[2] - got[0], got[3] - got[1]
    cx, cy = (got[0] + got[2]) / 2, (got[1] + got[3]) / 2
    offset = max(abs(evidence.centroid[0] - cx), abs(evidence.centroid[1] - cy))
    if evidence.symmetric and offset > CENTROID_TOLERANCE_PX * max(zoom, 1.0):
        return True, offset, f"box centre {offset:.2f} px from the object's centre"
    floor = shrink_iou(w, h, d)
    value = iou(ev, got)
    if value < floor:
        return True, offset, f"IoU {value:.3f} below {floor:.3f} for a {w:.0f}x{h:.0f} px box"
    return False, offset, ""


def _fmt(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in box) + "]"


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
        image_kind: str = "tensor",
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
        report = ProbeReport(results)
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
    "Probe",
    "ProbeReport",
    "TrialResult",
    "check_transform",
    "judge",
    "make_sample",
    "measure_region",
]
