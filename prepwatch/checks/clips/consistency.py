"""Does a clip's photometric augmentation stay the same from frame to frame?

Each augmented frame is compared with its own raw frame, so whatever the content does
over time (lights dimming, flicker in the footage, an object entering) cancels: only the
change the augmentation made is measured.

**Pixel mode** (frames still correspond pixel for pixel; a consistent flip is undone
first). Brightness, contrast, saturation, grayscale and normalization map every pixel's
colour through one affine map ``a = M r + b``; hue shifts are close to it (quadratic
colour terms divided by brightness follow them). A consistent augmentation applies the
same map to every frame, except that contrast blends each frame towards its own mean
grey, which moves ``b`` with that frame's mean brightness (and with the share of pixels
an earlier clamp took off the map: both enter the shared model as content terms). Three
fits over a subsample of pixels: per frame; one colour map with a free offset per frame;
one map and offset for the whole clip. What the per-frame fits explain beyond the shared
ones, root-mean-square, relative to the raw signal carried through the shared map, is
the **jitter** (reported split into gain and offset parts). A brightness factor varying
with standard deviation ``s`` around ``f`` gives about ``s / f`` (a little less: the
content terms absorb about 1/(T-1) of it); an additive shift with standard deviation
``d`` gives ``d`` over the signal's rms. Pixels clamped at the output's extremes, and
pixels that do not follow even their own frame's map (clamped inside the pipeline, found
by least median of squares), are left out.

**Moments mode** (frame size changed: crop, resize; or pixels no longer correspond).
Per frame, the contrast gain is std(aug luma)/std(raw luma) and the brightness shift what
the mean adds beyond it; jitter combines the spread of log gain over frames with the
spread of the shift. The raw statistics must describe the content the output frame
shows: a crop of a panning or moving scene holds other content than the whole raw frame,
and the whole frame's statistics drift against the crop's from frame to frame (on a
panning camera with one consistent crop that drift measured 0.03-0.15, read as jitter).
So the region the output shows is located in raw frame 0 (normalized cross-correlation
of luma over crop sizes, positions and flips, :mod:`prepwatch.checks.clips.locate`;
blind to gain and offset, so the photometric change under test does not move it), the
same region of every raw frame is resized to the output's size, and the statistics are
compared on that. A consistent geometric augmentation takes the same region of every
frame; the check requires every frame's output to correlate with its located region by
at least 0.7 (the region explains half the output's luma variance or more). Where it
does not (a crop that moves from frame to frame, padding, rotation, heavy blur or
noise), the clip is **skipped**, not judged: photometric consistency cannot be read off
content that does not correspond. Only clips known to show stationary texture (the
monitor's probe, whose statistics any crop shares) fall back to whole-frame statistics.
Interpolation differences between the pipeline's resize and ours make this noisier than
pixel mode: it judges against twice the threshold.

**Threshold 0.03** (3% frame-to-frame variation). Measured on generated moving-object
clips (steady, dimming by half, flickering by 15%): consistent pipelines stay <= 0.01
(torchvision ColorJitter on a Video, brightness-then-contrast with clamping,
normalization, grayscale) and <= 0.03 at worst (RandomPhotometricDistort's hue and
channel changes on flickering content); per-frame jitter at the mildest strength in
common use, brightness 0.1 (factor uniform in [0.9, 1.1], s.d. 0.058), measures
0.015-0.06 (median 0.04) and at ColorJitter(0.4, 0.4, 0.4) 0.07-0.27. Per-frame
contrast-only jitter registers weakly (contrast 0.1: ~0.015), since it only moves pixels
relative to the frame mean. 3% is also about the exposure flicker real footage has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from prepwatch.checks.clips.locate import crop_resample, frame_correlations, locate

DEFAULT_THRESHOLD = 0.03
# Statistics of a cropped frame wobble with what the crop happens to contain: on the
# probe's stationary texture, consistent random-resized crops measure up to ~0.05, so
# moments mode judges against twice the threshold.
MOMENTS_THRESHOLD_FACTOR = 2.0
# Below this per-frame R^2 the pixels of raw and augmented frames no longer correspond.
PIXEL_MODE_MIN_R2 = 0.9
# Residuals beyond this many robust standard deviations of a frame's own fit are clamped
# or otherwise off-map pixels.
OUTLIER_SIGMAS = 4.0
# Share of a frame's pixels off its colour map from which clamping is modelled.
MIN_OFF_MAP_SHARE = 0.005
# Moments mode: every output frame must correlate (luma, Pearson) at least this much with
# the raw region located for it, i.e. that region explains half its variance or more.
LOCATE_MIN_CORR = 0.7
CLIP_LAYOUTS = ("TCHW", "CTHW")


@dataclass
class ClipReport:
    """Consistency of one clip's augmentation."""

    jitter: float | None  # None when it could not be measured
    consistent: bool | None
    mode: str  # "pixel", "moments" or "skipped"
    frames: int
    note: str = ""


def _as_array(clip: Any, layout: str = "TCHW") -> np.ndarray:
    """A clip as float64 (T, C, H, W), whatever its layout."""
    if isinstance(clip, torch.Tensor):
        arr = clip.detach().cpu().as_subclass(torch.Tensor).to(torch.float64).numpy()
    else:
        arr = np.asarray(clip, dtype=np.float64)
    if arr.ndim == 3:  # (T, H, W): single-channel
        arr = arr[:, None]
    elif arr.ndim == 4 and layout == "CTHW":
        arr = arr.transpose(1, 0, 2, 3)
    if arr.ndim != 4:
        raise ValueError(f"expected a clip of shape ({', '.join(layout)}), got {arr.shape}")
    return arr


def wrong_layout(shape: tuple[int, ...], what: str, fix: str) -> str:
    """Why a (T, C, H, W) clip (or (N, T, C, H, W) batch) is plainly (C, T, H, W), or "".

    Read the wrong way round, frames become channels: per-frame jitter is missed and a
    consistent per-channel colour change is flagged. Plain means the second axis looks
    like colour (1 or 3) and the first axis after it cannot be (not 1, 3 or 4).
    """
    if len(shape) not in (4, 5):
        return ""
    axis = len(shape) - 4  # the frame axis of (T, C, H, W) or (N, T, C, H, W)
    t, c = shape[axis], shape[axis + 1]
    if t in (1, 3) and c not in (1, 3, 4):
        lead = "(N, " if axis else "("
        return (
            f"{what} of shape {tuple(shape)} reads as {t} frame(s) of {c} channels; it looks"
            f" like {lead}C, T, H, W) with {c} frames of {t} channel(s): pass {fix}"
        )
    return ""


def clip_consistency(
    raw: Any, augmented: Any, *, threshold: float = DEFAULT_THRESHOLD, max_pixels: int = 2048,
    layout: str = "TCHW", stationary: bool = False,
) -> ClipReport:
    """Measure how much the photometric change of ``augmented`` vs ``raw`` varies per frame.

    Both are clips in ``layout`` ("TCHW", or "CTHW" as PyTorchVideo/SlowFast/X3D use),
    tensors or arrays, frame t of one matching frame t of the other. ``stationary``: the
    content's statistics are the same everywhere (generated texture), so when the region
    a crop shows cannot be located, whole-frame statistics may stand in for it; on real
    footage they may not, and such clips are skipped.
    """
    if layout not in CLIP_LAYOUTS:
        raise ValueError(f"layout must be one of {CLIP_LAYOUTS}, got {layout!r}")
    r, a = _as_array(raw, layout), _as_array(augmented, layout)
    if layout == "TCHW":
        layout_error = wrong_layout(tuple(r.shape), "clip", "layout='CTHW'")
        if layout_error:
            raise ValueError(layout_error)
    frames = r.shape[0]
    if a.shape[0] != frames:
        raise ValueError(f"raw clip has {frames} frames, augmented has {a.shape[0]}")
    if frames < 2:
        return ClipReport(None, None, "skipped", frames, "one frame: nothing to compare")
    if not (np.isfinite(a).all() and np.isfinite(r).all()):
        return ClipReport(None, None, "skipped", frames, "non-finite values")
    jitter: float | None = None
    mode = "moments"
    note = ""
    if r.shape[2:] == a.shape[2:]:
        jitter, note = _pixel_jitter(r, a, max_pixels)
        mode = "pixel"
        if jitter is None:
            mode = "moments"
    if jitter is None:
        matched, where = _matched_region(r, a)
        if matched is None and not stationary:
            note = "; ".join(x for x in (note, where) if x)
            return ClipReport(None, None, "skipped", frames, note)
        jitter, extra = _moment_jitter(r if matched is None else matched, a)
        note = "; ".join(x for x in (note, where, extra) if x)
    if jitter is None:
        return ClipReport(None, None, "skipped", frames, note)
    limit = threshold * (MOMENTS_THRESHOLD_FACTOR if mode == "moments" else 1.0)
    return ClipReport(jitter, jitter <= limit, mode, frames, note)


def _lstsq_sse(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares through the normal equations (features are few, pixels many)."""
    xtx = x.T @ x
    xty = x.T @ y
    coef = np.linalg.pinv(xtx, rcond=1e-12, hermitian=True) @ xty
    resid = y - x @ coef
    return coef, float((resid * resid).sum())


LUMA = np.array([0.2989, 0.587, 0.114])  # ITU-R 601, as torchvision, PIL and OpenCV use


def _features(x: np.ndarray) -> np.ndarray:
    """Colour features of pixels (n, C): linear terms, products over brightness, constant.

    ``x_i * x_j / mean(x)`` is degree-one homogeneous like the linear terms, so hue and
    saturation changes (which scale with the pixel's brightness) are followed by one shared
    map as closely as by per-frame maps even when the content dims: only real changes
    between frames remain.
    """
    n, c = x.shape
    cols = [x]
    if c > 1:
        level = np.abs(x).mean(axis=1) + 1e-3 * (float(np.abs(x).max()) + 1e-12)
        for i in range(c):
            for j in range(i, c):
                cols.append((x[:, i] * x[:, j] / level)[:, None])
    cols.append(np.ones((n, 1)))
    return np.concatenate(cols, axis=1)


def _pixel_jitter(r: np.ndarray, a: np.ndarray, max_pixels: int) -> tuple[float | None, str]:
    # A consistent flip moves every pixel; undo it before giving up on pixel mode. The
    # candidate is chosen on the first frame alone (one small fit each).
    candidates = (a, a[..., ::-1], a[..., ::-1, :], a[..., ::-1, ::-1])
    for cand in candidates:
        if _corresponds(r[0], cand[0], max_pixels):
            return _pixel_jitter_aligned(r, cand, max_pixels)
    return None, "pixels of raw and augmented frames do not correspond (geometric change?)"


def _corresponds(r: np.ndarray, a: np.ndarray, max_pixels: int) -> bool:
    c_in, c_out = r.shape[0], a.shape[0]
    x = r.reshape(c_in, -1).T[:: max(1, r[0].size // max_pixels)]
    y = np.ascontiguousarray(a).reshape(c_out, -1).T[:: max(1, r[0].size // max_pixels)]
    feats = _features(x)
    _, sse = _lstsq_sse(feats, y)
    sst = float(((y - y.mean(axis=0)) ** 2).sum())
    return sst <= 0 or 1.0 - sse / sst >= PIXEL_MODE_MIN_R2


def _pixel_jitter_aligned(r: np.ndarray, a: np.ndarray, max_pixels: int) -> tuple[float | None, str]:
    frames, c_in, height, width = r.shape
    c_out = a.shape[1]
    n = height * width
    idx = np.arange(n)
    if n > max_pixels:
        idx = np.random.default_rng(0).choice(n, size=max_pixels, replace=False)
    rp = r.reshape(frames, c_in, n)[:, :, idx].transpose(0, 2, 1)  # (T, n, C)
    ap = np.ascontiguousarray(a).reshape(frames, c_out, n)[:, :, idx].transpose(0, 2, 1)
    lo = ap.min(axis=(0, 1))
    hi = ap.max(axis=(0, 1))
    flat = hi - lo < 1e-12
    tol = 1e-6 * np.maximum(hi - lo, 1e-12)
    valid = (((ap > lo + tol) & (ap < hi - tol)) | flat).all(axis=2)  # (T, n): unclamped
    luma = rp @ LUMA if c_in == 3 else rp.mean(axis=2)  # (T, n)
    xs, ys, levels = [], [], []
    sse_frames = 0.0
    r2s = []
    for t in range(frames):
        v = valid[t]
        x = _features(rp[t][v])
        if v.sum() < 8 * x.shape[1]:
            return None, f"frame {t}: too few unsaturated pixels"
        if float(np.ptp(rp[t][v], axis=0).max()) <= 0:
            return None, f"frame {t}: raw frame is flat"
        y = ap[t][v]
        # Pixels that do not follow even their own frame's colour map were clamped
        # somewhere inside the pipeline (e.g. brightness, then contrast): leave them out
        # of both fits, whatever the augmentation did between frames.
        keep = _map_inliers(rp[t][v], y)
        if keep.sum() < 8 * x.shape[1]:
            return None, f"frame {t}: too few pixels follow a colour map"
        x, y = x[keep], y[keep]
        _, sse = _lstsq_sse(x, y)
        sst = float(((y - y.mean(axis=0)) ** 2).sum())
        r2s.append(1.0 - sse / sst if sst > 0 else 1.0)
        sse_frames += sse
        xs.append(x)
        ys.append(y)
        # A contrast change blends each frame towards its own mean grey, taken after any
        # clamp earlier in the pipeline. That level is linear in the frame's mean grey,
        # the grey of the pixels an earlier clamp took off the map, and their share.
        off_map = np.flatnonzero(v)[~keep]
        levels.append((
            float(luma[t].mean()), float(luma[t][off_map].sum()) / len(idx), len(off_map) / len(idx),
        ))
    if float(np.median(r2s)) < PIXEL_MODE_MIN_R2:
        return None, "pixels of raw and augmented frames do not correspond (geometric change?)"
    x_all = np.concatenate(xs)
    y_all = np.concatenate(ys)
    k = x_all.shape[1] - 1  # non-constant colour features
    onehot = np.zeros((len(x_all), frames))
    start = 0
    for t, x in enumerate(xs):
        onehot[start : start + len(x), t] = 1.0
        start += len(x)
    # Shared colour map, free offset per frame: what remains is gain change between frames.
    coef_g, sse_gain = _lstsq_sse(np.concatenate([x_all[:, :k], onehot], axis=1), y_all)
    # Shared map and shared offset (plus the content-level terms): offset change too.
    lv = np.asarray(levels)
    columns = [x_all]
    moving = lv.std(axis=0) > 1e-3 * np.maximum(np.abs(lv).max(axis=0), 1e-12)
    # Off-map terms only where a clamp really took pixels off the map.
    moving[1:] &= bool(lv[:, 2].max() >= MIN_OFF_MAP_SHARE)
    if frames > 2 and moving.any():
        columns.append(onehot @ lv[:, moving])
    _, sse_shared = _lstsq_sse(np.concatenate(columns, axis=1), y_all)
    signal = x_all[:, :k] @ coef_g[:k]  # raw carried through the shared colour map
    scale = math.sqrt(float((signal * signal).mean()))
    if scale <= 0:
        return None, "augmented clip carries no signal"
    total = len(x_all) * c_out
    gain = math.sqrt(max(0.0, sse_gain - sse_frames) / total) / scale
    offset = math.sqrt(max(0.0, sse_shared - sse_gain) / total) / scale
    return math.hypot(gain, offset), f"gain {gain:.4f}, offset {offset:.4f}"


def _map_inliers(x: np.ndarray, y: np.ndarray, subsets: int = 32) -> np.ndarray:
    """Pixels that follow the frame's dominant affine colour map.

    Least median of squares over minimal random subsets (tolerates up to half the pixels
    clamped), then a least-squares refit on the inliers. Affine, so that quadratic terms
    cannot bend around clamped pixels.
    """
    n, c = x.shape
    lin = np.concatenate([x, np.ones((n, 1))], axis=1)
    rng = np.random.default_rng(n)
    picks = rng.integers(0, n, size=(subsets, c + 1))
    coefs = np.linalg.pinv(lin[picks]) @ y[picks]  # (subsets, c+1, c_out)
    probe = rng.choice(n, size=min(n, 256), replace=False)  # medians on a subsample
    resid_all = np.abs(y[probe][None] - lin[probe][None] @ coefs).max(axis=2)
    meds = np.median(resid_all, axis=1)
    i = int(np.argmin(meds))
    best, best_med = coefs[i], float(meds[i])
    floor = 1e-9 * (float(np.abs(y).max()) + 1.0)
    resid = np.abs(y - lin @ best).max(axis=1)
    keep = resid <= OUTLIER_SIGMAS * (1.4826 * best_med + floor)
    for _ in range(2):
        if keep.sum() <= c + 1:
            break
        coef, _ = _lstsq_sse(lin[keep], y[keep])
        resid = np.abs(y - lin @ coef).max(axis=1)
        keep = resid <= OUTLIER_SIGMAS * (1.4826 * float(np.median(resid[keep])) + floor)
    return keep


def _luma(x: np.ndarray) -> np.ndarray:
    """(T, C, H, W) -> (T, H, W)."""
    return np.tensordot(LUMA, x, axes=([0], [1])) if x.shape[1] == 3 else x.mean(axis=1)


def _matched_region(r: np.ndarray, a: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The raw region every output frame shows, resized to the output's size, or None.

    Located on frame 0 and required to hold on every frame: a consistent geometric
    augmentation takes the same region of every frame.
    """
    size = a.shape[2:]
    ra, aa = _luma(r), _luma(a)
    region = locate(ra[0], aa[0])
    if region is None:
        return None, "the region the output shows was not found in the raw frame"
    matched = crop_resample(r, region, size)
    corr = frame_correlations(_luma(matched), aa)
    flips = "".join(f for f, on in ((" h-flipped", region.flip_h), (" v-flipped", region.flip_v)) if on)
    where = f"raw region y={region.y} x={region.x} {region.h}x{region.w}{flips}"
    worst = int(np.argmin(corr))
    if not corr[worst] >= LOCATE_MIN_CORR:
        return None, (
            f"{where} matches frame 0 (r={corr[0]:.2f}) but frame {worst} only r={corr[worst]:.2f}:"
            " output frames do not show one raw region (moving crop, padding, rotation, blur?)"
            if corr[0] >= LOCATE_MIN_CORR else
            f"output frame 0 not located in the raw frame (best r={corr[0]:.2f})"
        )
    return matched, f"{where}, r >= {corr[worst]:.2f}"


def _moment_jitter(r: np.ndarray, a: np.ndarray) -> tuple[float | None, str]:
    """Luma statistics per frame: saturation and hue leave luma (nearly) alone."""
    r, a = _luma(r), _luma(a)
    frames = r.shape[0]
    mr, sr = r.mean(axis=(1, 2)), r.std(axis=(1, 2))  # (T,)
    ma, sa = a.mean(axis=(1, 2)), a.std(axis=(1, 2))
    if (sr <= 1e-9).any() or (sa <= 1e-9).any():
        return None, "a frame has no contrast"
    gain = sa / sr
    gain_jitter = float(np.log(gain).std(ddof=1))
    shift = ma - gain * mr  # what the mean adds beyond the gain
    design = [np.ones((frames, 1))]
    if mr.std() > 1e-3 * max(abs(mr.mean()), 1e-12) and frames > 2:
        design.append(mr[:, None])
    x = np.concatenate(design, axis=1)
    _, sse = _lstsq_sse(x, shift[:, None])
    dof = max(1, frames - x.shape[1])
    rms_signal = float(gain.mean() * np.sqrt((mr**2 + sr**2).mean()))
    shift_jitter = math.sqrt(sse / dof) / max(rms_signal, 1e-12)
    return math.hypot(gain_jitter, shift_jitter), ""
