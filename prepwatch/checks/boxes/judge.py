"""One probe trial judged: does the transform's box agree with where its object went?

Compares the evidence (evidence.py) with the box under the tolerances of tolerances.py
and names the kind of disagreement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from prepwatch.checks.boxes.adapters import ProbeInput, ProbeOutput
from prepwatch.checks.boxes.evidence import Evidence, measure_region  # noqa: F401
from prepwatch.checks.boxes.formats import (
    OUTCOMES,
    classify,
    iou,
    shrink_iou,
)
from prepwatch.checks.boxes.tolerances import (
    CENTROID_TOLERANCE_PX,
    EDGE_TOLERANCE_PX,
    NEAREST_EXTRA_PX,
    OFFSET_KIND_MAX_PX,
    PHANTOM_MIN_AREA_PX,
    ROTATED_EDGE_PX,
)


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
