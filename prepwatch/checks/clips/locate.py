"""Where in the raw frame does a cropped/resized output frame come from?

Moments mode compares each output frame's luma statistics with those of its raw frame.
When the pipeline cropped, the raw statistics must come from the same region: the whole
raw frame holds other content, and when the camera pans or objects move the whole-frame
statistics drift against the crop's from frame to frame, which reads as jitter. A crop
(or resize, or flip) that the augmentation applies consistently takes the same region of
every frame, so it is located once, on frame 0, and checked on every frame.

The search is normalized cross-correlation of luma (blind to any gain and offset, so a
photometric change, consistent or not, does not move it) over crop sizes and positions:
a coarse pass over the whole frame at about 48 pixels a side, then refinement of size
and position at doubling resolution. Consistent horizontal and vertical flips are
searched alongside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

COARSE_SIDE = 32  # longer raw side at the coarse level, in pixels
FINE_SIDE = 256  # refinement stops at this resolution (statistics need no finer)
MIN_CROP_SHARE = 0.25  # smallest crop side searched, as a share of the raw side
# Crop aspect over output aspect: RandomResizedCrop's default ratio range (3/4, 4/3), a
# little wider; the whole raw frame (plain resize to any aspect) is always a candidate.
ASPECTS = (0.75, 0.87, 1.0, 1.15, 1.33)
COARSE_STEP = 0.12  # log step of crop size in the coarse pass (halves per refinement)
FINAL_STEP = 0.015  # refinement goes on until the size step is this fine (1.5%)
MIN_TEMPLATE = 6  # template side at the coarse level, pixels
FLAT = 1e-3  # a window whose std is below this share of the frame's std is flat


@dataclass(frozen=True)
class Region:
    """A raw-frame box (pixels) and the flips that map it onto the output frame."""

    y: int
    x: int
    h: int
    w: int
    flip_h: bool  # output's columns reversed
    flip_v: bool  # output's rows reversed
    score: float  # correlation of frame 0's output with the located region


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]


def _flips(a: torch.Tensor) -> torch.Tensor:
    """(1, 1, h, w) -> (4, 1, h, w): as is, columns reversed, rows reversed, both."""
    return torch.cat([a, a.flip(-1), a.flip(-2), a.flip(-1, -2)])


FLIPS = ((False, False), (True, False), (False, True), (True, True))


class _Image:
    """A level image with integral images of it and its square (box sums in O(1))."""

    def __init__(self, image: torch.Tensor) -> None:
        self.image = image
        img = image[0, 0].double()
        self.sums = F.pad(img.cumsum(0).cumsum(1), (1, 0, 1, 0))
        self.squares = F.pad((img * img).cumsum(0).cumsum(1), (1, 0, 1, 0))
        self.floor = float((FLAT * img.std()) ** 2)
        self._spectrum: torch.Tensor | None = None  # FFT of the whole image, on first use

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape[-2:])  # type: ignore[return-value]

    def ncc(self, templates: torch.Tensor, ys: int = 0, xs: int = 0,
            ye: int | None = None, xe: int | None = None) -> torch.Tensor:
        """Normalized cross-correlation maps (K, h', w') of templates (K, 1, h, w) over
        the window [ys:ye, xs:xe] of the image."""
        ye = self.shape[0] if ye is None else ye
        xe = self.shape[1] if xe is None else xe
        h, w = templates.shape[-2:]
        t = templates - templates.mean(dim=(-2, -1), keepdim=True)
        tnorm = t.flatten(1).norm(dim=1).clamp_min(1e-12)
        num = self._correlate(t, ys, xs, ye, xe)  # (K, h', w')
        n = h * w
        s = _box(self.sums, ys, xs, ye, xe, h, w)
        q = _box(self.squares, ys, xs, ye, xe, h, w)
        var = (q - s * s / n).float()
        # A flat window (a uniform object, a letterbox bar) correlates with nothing.
        flat = var <= n * self.floor
        return torch.where(flat, 0.0, num / (var.clamp_min(1e-30).sqrt() * tnorm[:, None, None]))


    def _correlate(self, t: torch.Tensor, ys: int, xs: int, ye: int, xe: int) -> torch.Tensor:
        """Valid cross-correlation of templates (K, 1, h, w) over a window, by FFT.

        The same numbers as ``conv2d`` (to ~1e-12 relative, in float64) for a fraction
        of the cost: the coarse pass correlates templates of up to the whole image, and
        direct convolution cost ~46 ms a call there (3.5 s a clip), the FFT ~1 ms.
        """
        h, w = t.shape[-2:]
        window = self.image[0, 0, ys:ye, xs:xe]
        H, W = window.shape
        if h * w <= 64:  # tiny templates: direct is cheaper
            return F.conv2d(self.image[..., ys:ye, xs:xe], t)[0]
        whole = (ys, xs, ye, xe) == (0, 0, *self.shape)
        if whole and self._spectrum is not None:
            spectrum = self._spectrum
        else:
            spectrum = torch.fft.rfft2(window.double())
            if whole:
                self._spectrum = spectrum
        kernel = torch.fft.rfft2(t[:, 0].double(), s=(H, W))
        full = torch.fft.irfft2(spectrum[None] * kernel.conj(), s=(H, W))
        return full[:, : H - h + 1, : W - w + 1].float()


def _box(c: torch.Tensor, ys: int, xs: int, ye: int, xe: int, h: int, w: int) -> torch.Tensor:
    """Sums of every h x w box with its corner in [ys, ye-h] x [xs, xe-w]."""
    return (c[ys + h : ye + 1, xs + w : xe + 1] - c[ys : ye - h + 1, xs + w : xe + 1]
            - c[ys + h : ye + 1, xs : xe - w + 1] + c[ys : ye - h + 1, xs : xe - w + 1])


def _level(raw: torch.Tensor, factor: float) -> torch.Tensor:
    if factor <= 1.0:
        return raw
    h, w = raw.shape[-2:]
    return F.interpolate(raw, size=(max(1, round(h / factor)), max(1, round(w / factor))),
                         mode="area")


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if x.shape[-2:] == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


def locate(raw0: np.ndarray, out0: np.ndarray) -> Region | None:
    """The raw region (and flip) that output frame 0 shows; luma frames (H, W), (h, w).

    None when no candidate is found at all (output larger than any crop we search).
    """
    big_h, big_w = raw0.shape
    out_h, out_w = out0.shape
    raw = _t(raw0)
    out = _t(out0)
    coarse = max(1.0, max(big_h, big_w) / COARSE_SIDE)
    # Coarse pass: every crop size on a log grid, every aspect, every position and flip.
    sizes = set()
    lo = math.log(MIN_CROP_SHARE)
    n = int(math.ceil(-lo / COARSE_STEP)) + 1
    for i in range(n):
        share = math.exp(lo + i * (-lo) / (n - 1))
        for aspect in ASPECTS:
            # Crop h x w with (w/h) / (out_w/out_h) = aspect, the larger side at `share`.
            h = share * big_h
            w = h * aspect * out_w / out_h
            if w > big_w:
                h, w = h * big_w / w, big_w
            sizes.add((round(h), round(w)))
    sizes.add((big_h, big_w))
    image = _Image(_level(raw, coarse))
    best: tuple[float, int, int, int, int, int] | None = None  # score, y, x, h, w, flip
    for h, w in sorted(sizes):
        th, tw = round(h / coarse), round(w / coarse)
        if min(h, w) < 8 or th < MIN_TEMPLATE or tw < MIN_TEMPLATE:
            continue
        if th > image.shape[0] or tw > image.shape[1]:
            continue
        maps = image.ncc(_flips(_resize(out, th, tw)))
        score, idx = maps.flatten().max(dim=0)
        k, rest = divmod(int(idx), maps.shape[1] * maps.shape[2])
        y, x = divmod(rest, maps.shape[2])
        if best is None or float(score) > best[0]:
            best = (float(score), round(y * coarse), round(x * coarse), h, w, k)
    if best is None:
        return None
    score, y, x, h, w, k = best
    # Refinement: halve the size step and the resolution factor until fine enough.
    factor, step = coarse, COARSE_STEP
    fine = max(1.0, max(big_h, big_w) / FINE_SIDE)
    while factor > fine or step > FINAL_STEP:
        factor, step = max(fine, factor / 2), step / 2
        image = _Image(_level(raw, factor))
        score, y, x, h, w = _refine(image, out, factor, step, (y, x, h, w), k, big_h, big_w)
    return Region(y, x, h, w, FLIPS[k][0], FLIPS[k][1], score)


def _refine(
    image: _Image, out: torch.Tensor, factor: float, step: float,
    box: tuple[int, int, int, int], k: int, big_h: int, big_w: int,
) -> tuple[float, int, int, int, int]:
    y, x, h, w = box
    cy, cx = y + h / 2, x + w / 2
    radius = 3  # pixels at this level around the scaled previous position
    best = (-2.0, y, x, h, w)
    flip = _flips(out)[k : k + 1]
    # Height first, then width from the best height (five correlations instead of the
    # 3 x 3 grid; the score surface is smooth this close to its peak).
    for dh, dw in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
        base_h = best[3] if dw else h
        nh = min(big_h, round(base_h * math.exp(dh * step)))
        nw = min(big_w, round(w * math.exp(dw * step)))
        th, tw = max(2, round(nh / factor)), max(2, round(nw / factor))
        # Window of the level image around the box, kept centred as its size changes.
        y0 = (cy - nh / 2) / factor
        x0 = (cx - nw / 2) / factor
        ys = max(0, int(math.floor(y0)) - radius)
        xs = max(0, int(math.floor(x0)) - radius)
        ye = min(image.shape[0], int(math.ceil(y0)) + th + radius)
        xe = min(image.shape[1], int(math.ceil(x0)) + tw + radius)
        if ye - ys < th or xe - xs < tw:
            continue
        maps = image.ncc(_resize(flip, th, tw), ys, xs, ye, xe)[0]
        score, idx = maps.flatten().max(dim=0)
        py, px = divmod(int(idx), maps.shape[1])
        if float(score) > best[0]:
            ny = min(max(0, round((ys + py) * factor)), big_h - nh)
            nx = min(max(0, round((xs + px) * factor)), big_w - nw)
            best = (float(score), ny, nx, nh, nw)
    return best


def crop_resample(clip: np.ndarray, region: Region, size: tuple[int, int]) -> np.ndarray:
    """The located region of every raw frame (T, C, H, W), resized and flipped as the output."""
    box = clip[:, :, region.y : region.y + region.h, region.x : region.x + region.w]
    x = torch.from_numpy(np.ascontiguousarray(box))
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    if region.flip_h:
        x = x.flip(-1)
    if region.flip_v:
        x = x.flip(-2)
    return x.numpy()


def frame_correlations(raw: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Pearson correlation of each frame pair, luma (T, h, w) each."""
    r = raw.reshape(len(raw), -1)
    a = out.reshape(len(out), -1)
    r = r - r.mean(axis=1, keepdims=True)
    a = a - a.mean(axis=1, keepdims=True)
    den = np.sqrt((r * r).sum(axis=1) * (a * a).sum(axis=1))
    return (r * a).sum(axis=1) / np.maximum(den, 1e-12)
