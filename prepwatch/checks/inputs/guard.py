"""Diagnosis of one served batch against a contract: which mistake, if any, made it.

Order of the checks, cheapest and most certain first:

1. ``dtype`` and ``layout``: read off the tensor, no pixels touched.
2. Statistics on the pixel grid (see :mod:`prepwatch.checks.inputs.stats`).
3. ``per_image``: every image carries the fingerprint of per-image scaling, in a
   batch big enough that correctly served images would not all do so by chance.
4. The affine mistakes (``scale_255``, ``double_scaled``, ``range``), two ways:

   - *out of range*: under the contract's own pipeline the batch maps to raw pixels
     outside [0, 1] (more than a few overshooting pixels). That cannot happen to a
     correctly served batch, whatever its content. The cause named is the known
     mistake under which the batch does map inside; "range" when none does.
   - *shrunk into range* (e.g. [0, 1] served to a model trained with ImageNet
     mean/std): still inside, so content alone (a foggy batch) could explain it.
     It is called only when a known mistake turns the batch into one that reaches
     both ends of the training range (per channel, as close as training batches
     came) while the contract's own reading does not, every image fits the mistake,
     and the batch is big enough that correctly served images would not all fit it
     by chance (rate measured at training).

5. ``channel_order``: swapping red and blue mirrors each image's chromaticity
   ``(R - B) / (R + G + B)``. Called when enough images look swapped and none
   confirms the order; when most training images cannot tell (grey-ish or mixed
   colour content) the contract is not verifiable and every result says
   "ambiguous" instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from prepwatch.checks.inputs.channel_order import chromaticity
from prepwatch.checks.inputs.contract import InputContract
from prepwatch.checks.inputs.hypotheses import (
    PER_IMAGE_DESCRIPTIONS,
    Hypothesis,
    coverage_gap,
    images_inside,
    per_image_signatures,
    raw_extremes,
)
from prepwatch.checks.inputs.stats import (
    FLOAT_DTYPES,
    VIOLATION_KINDS,
    ImageStats,
    dtype_name,
    fraction_outside,
    grid,
    grid_stride,
    image_stats,
)
from prepwatch.checks.inputs.tolerances import POOLED_CALL


@dataclass(frozen=True)
class GuardResult:
    """Outcome of checking one batch.

    ``kinds`` lists every violation found, most likely cause first (``cause``);
    ``explanation`` names the specific mistake (e.g. ``range_0_1``); ``detail`` is a
    sentence for logs and exceptions. ``channel_order`` is "ok", "swapped",
    "ambiguous" (the contract's channels are too alike to tell) or "unchecked".
    """

    ok: bool
    kinds: tuple[str, ...] = ()
    cause: str | None = None
    explanation: str | None = None
    detail: str = ""
    channel_order: str = "unchecked"
    batch_size: int = 0
    checked: bool = True
    stats: ImageStats | None = field(default=None, repr=False, compare=False)


def _layout_view(x: torch.Tensor, contract: InputContract) -> tuple[torch.Tensor | None, str]:
    """An ``(N, C, H, W)`` view of ``x`` and a note when its layout breaks the contract."""
    c = contract.channels
    if x.dim() == 3:  # an unbatched image is valid input to most vision models
        x = x.unsqueeze(0)
    if x.dim() != 4:
        return None, f"a {x.dim()}-d tensor {tuple(x.shape)}; the contract expects 4-d {contract.layout}"
    nchw = contract.layout == "NCHW"
    expected, other = (1, 3) if nchw else (3, 1)
    if x.shape[expected] == c:
        return (x if nchw else x.permute(0, 3, 1, 2)), ""
    if x.shape[other] == c:
        found = "NHWC" if nchw else "NCHW"
        view = x.permute(0, 3, 1, 2) if nchw else x
        return view, f"{found} tensor {tuple(x.shape)}; the contract expects {contract.layout}"
    return None, (
        f"tensor {tuple(x.shape)} has no axis of {c} channels where {contract.layout} "
        "puts them"
    )


def _ordered(kinds: list[str]) -> tuple[str, ...]:
    return tuple(sorted(set(kinds), key=VIOLATION_KINDS.index))


def diagnose(contract: InputContract, x: torch.Tensor) -> GuardResult:
    """Check one batch; never modifies it. See the module docstring for the method."""
    kinds: list[str] = []
    notes: list[str] = []
    name = dtype_name(x.dtype)
    if name != contract.dtype and not (name in FLOAT_DTYPES and contract.is_float):
        kinds.append("dtype")
        notes.append(f"dtype {name}; the contract expects {contract.dtype}")
    view, layout_note = _layout_view(x, contract)
    if layout_note:
        kinds.append("layout")
        notes.append(layout_note)
    if view is None or view.shape[0] == 0:
        return _result(kinds, notes, None, "unchecked", 0, None)

    xs = grid(view, grid_stride(int(view.shape[2]), int(view.shape[3])))
    stats = image_stats(xs)
    n = stats.n
    if not stats.finite():
        kinds.append("range")
        notes.append("non-finite values (NaN or Inf) in the batch")
        return _result(kinds, notes, "non_finite", "unchecked", n, stats)

    # per-image scaling: every image on the same canonical statistics
    sigs = per_image_signatures(stats, contract.per_image_eps)
    for sig, hits in sigs.items():
        need = contract.per_image_batch.get(sig)
        if need is not None and n >= need and bool(hits.all()):
            kinds.append("per_image")
            notes.append(f"{PER_IMAGE_DESCRIPTIONS[sig]}, in all {n} images")
            return _result(kinds, notes, sig, "unchecked", n, stats)

    frame, explanation = _affine(contract, stats, xs, kinds, notes)
    order = _judge_channel_order(contract, stats, frame, kinds, notes)
    return _result(kinds, notes, explanation, order, n, stats)


def _affine(
    contract: InputContract, stats: ImageStats, xs: torch.Tensor,
    kinds: list[str], notes: list[str],
) -> tuple[Hypothesis | None, str | None]:
    """Which pipeline (the contract's or a known mistake) explains the batch's values."""
    hyps = contract.hypotheses
    h0 = hyps[0]
    support, margin, coverage = contract.support, contract.margin, contract.coverage
    low0, high0 = raw_extremes(stats, h0)
    exceeds = bool(
        np.any(low0.min(axis=0) < support[0] - margin)
        or np.any(high0.max(axis=0) > support[1] + margin)
    )
    if exceeds:
        lo_t = (support[0] - margin - h0.b) / h0.a
        hi_t = (support[1] + margin - h0.b) / h0.a
        share = fraction_outside(xs, lo_t, hi_t)
        if share > contract.outside_share:
            best, best_gap = None, np.inf
            span = support[1] - support[0]
            for h in hyps[1:]:
                lo, hi = raw_extremes(stats, h)
                if images_inside(lo, hi, support, margin).all():
                    gap = (contract.reach.distance(lo, hi, span) if contract.reach is not None
                           else coverage_gap(lo, hi, coverage, contract.coverage_tolerance))
                    if gap < best_gap:
                        best, best_gap = h, gap
            pct = f"{100 * share:.3g}% of values outside the contract's range"
            if best is None:
                kinds.append("range")
                notes.append(f"{pct}; no known pipeline mistake explains them")
                return None, "outside"
            kinds.append(best.kind)
            notes.append(f"{pct}; they fit {best.description}")
            return best, best.name

    if contract.reach is not None:
        return _shrunk(contract, stats, low0, high0, kinds, notes)
    tolerance = contract.coverage_tolerance
    gap0 = coverage_gap(low0, high0, coverage, tolerance)
    if gap0 <= 1.0:  # the batch already reaches both ends: nothing shrank it
        return h0, None
    best, best_gap = None, np.inf
    for h in hyps[1:]:
        need = contract.hypothesis_batch.get(h.name)
        if need is None or stats.n < need:
            continue
        lo, hi = raw_extremes(stats, h)
        if not images_inside(lo, hi, support, margin).all():
            continue
        gap = coverage_gap(lo, hi, coverage, tolerance)
        if gap <= 1.0 and gap < best_gap:
            best, best_gap = h, gap
    if best is None:
        return h0, None
    kinds.append(best.kind)
    notes.append(
        f"values fall short of the training range at one end or both; read as "
        f"{best.description} they span it"
    )
    return best, best.name


def _shrunk(
    contract: InputContract, stats: ImageStats, low0: np.ndarray, high0: np.ndarray,
    kinds: list[str], notes: list[str],
) -> tuple[Hypothesis | None, str | None]:
    """Inside the range: a mistake when the contract's reading falls short of where
    correct batches of this size reach (beyond chance) and a known mistake's reading
    reaches (see :mod:`prepwatch.checks.inputs.reach`)."""
    reach = contract.reach
    hyps = contract.hypotheses
    assert reach is not None
    if stats.n < reach.min_batch or not reach.falls_short(low0, high0).any():
        return hyps[0], None
    support, margin = contract.support, contract.margin
    span = support[1] - support[0]
    best, best_gap = None, np.inf
    # The chance-rate gate stays: batches of alike images (a foggy set) break the
    # independence the reach levels assume, and the gate (correct training images that
    # already fit the mistake) keeps them quiet. It refuses [-1, 1] on an ImageNet
    # contract over narrow channels, whose correct images read as [-1, 1] fit too.
    for h in hyps[1:]:
        need = contract.hypothesis_batch.get(h.name)
        if need is None or stats.n < need:
            continue
        lo, hi = raw_extremes(stats, h)
        if (not images_inside(lo, hi, support, margin).all()
                or not reach.reaches(lo, hi, contract.coverage)):
            continue
        gap = reach.distance(lo, hi, span)
        if gap < best_gap:
            best, best_gap = h, gap
    if best is None:
        return hyps[0], None
    kinds.append(best.kind)
    notes.append(
        f"values fall short of where correct batches of {stats.n} reach in the training "
        f"range; read as {best.description} they reach it"
    )
    return best, best.name


def _judge_channel_order(
    contract: InputContract, stats: ImageStats, frame: Hypothesis | None,
    kinds: list[str], notes: list[str],
) -> str:
    """Swapped only when enough images look swapped and none confirms the order, or,
    for data whose images do not confirm it one by one, when a diverse batch's mean
    colour balance is the mirror of training's."""
    if stats.channels != 3 or frame is None or contract.channel_envelope is None:
        return "unchecked"
    if not contract.channel_order_verifiable:
        return "ambiguous"
    d = chromaticity(stats.mean * frame.a + frame.b, contract.channel_pair)
    if not contract.channel_per_image_verifiable:
        return _pooled_channel_order(contract, d, kinds, notes)
    lo, hi = contract.channel_envelope
    inside = (d >= lo) & (d <= hi)
    mirrored = (d >= -hi) & (d <= -lo)
    confirms = int((inside & ~mirrored).sum())
    swapped = int((mirrored & ~inside).sum())
    need = contract.channel_min_batch
    if confirms:
        return "ok"
    if need is None or swapped < need:
        return "ambiguous"
    return _swapped(contract, f"in {swapped} of {stats.n} images (their colour balance mirrors "
                    "the training images'; none matches it)", kinds, notes)


def _pooled_channel_order(
    contract: InputContract, d: np.ndarray, kinds: list[str], notes: list[str],
) -> str:
    """Judge the batch's mean chromaticity against training's (and its mirror).

    Assumes the batch is a draw like a training batch: a batch of one scene (its images'
    spread well below training's) says nothing about the order and is left "ambiguous".
    """
    pooled = contract.channel_pooled
    n = int(d.shape[0])
    if pooled is None or n < pooled[2]:
        return "ambiguous"
    mean, std, _ = pooled
    if float(d.std(ddof=1)) < 0.5 * std:
        return "ambiguous"
    t = float(d.mean()) * np.sign(mean) / (std / np.sqrt(n))
    if t >= POOLED_CALL:
        return "ok"
    if t > -POOLED_CALL:
        return "ambiguous"
    return _swapped(contract, f"(the mean colour balance of these {n} images, "
                    f"{float(d.mean()):+.3f}, mirrors the training images', {mean:+.3f})",
                    kinds, notes)


def _swapped(contract: InputContract, evidence: str, kinds: list[str], notes: list[str]) -> str:
    i, j = contract.channel_pair
    names = contract.channel_names
    kinds.append("channel_order")
    notes.append(f"channels {names[i]} and {names[j]} look swapped {evidence}")
    return "swapped"


def _result(
    kinds: list[str], notes: list[str], explanation: str | None, order: str, n: int,
    stats: ImageStats | None,
) -> GuardResult:
    ordered = _ordered(kinds)
    return GuardResult(
        ok=not ordered,
        kinds=ordered,
        cause=ordered[0] if ordered else None,
        explanation=explanation,
        detail="; ".join(notes),
        channel_order=order,
        batch_size=n,
        stats=stats,
    )
