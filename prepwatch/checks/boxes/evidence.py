"""Evidence: where the marked pixels of a probe image went through the transform.

The measurement half of the alignment probe (the judging half is judge.py): edges to a
fraction of a pixel from coverage, whether the region stayed axis-aligned, its centroid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prepwatch.checks.boxes.tolerances import (
    MIN_EVIDENCE_PX,
    SYMMETRY_PX,
)


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
