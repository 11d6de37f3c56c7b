"""The pipeline mistakes the guard knows, each an exact map back to raw pixels.

Training feeds the model ``t = (u - m) / s`` per channel, with ``u`` the raw pixel
in [0, 1] and ``m, s`` the training mean/std in [0, 1] units. Every common serving
mistake is another per-channel affine map of ``u``; inverting it gives what the raw
pixels would have been *if that mistake had been made*:

    raw = A * served + B

The diagnosis asks which hypothesis turns the served batch back into a plausible
batch of raw pixels: inside [0, 1] (the support), and, for a varied batch,
reaching both ends of the range the training batches reached (the coverage).
The correct pipeline is one hypothesis among them (``contract``), so no constant
is tuned to a dataset: everything is measured against the contract's own range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prepwatch.checks.inputs.stats import ImageStats

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Hypothesis:
    """One way the served tensor may have been made; ``raw = a * served + b``."""

    name: str
    kind: str
    description: str
    a: np.ndarray
    b: np.ndarray

    def same_map(self, other: Hypothesis) -> bool:
        """Two hypotheses that produce the same tensor cannot be told apart."""
        return bool(
            np.all(np.abs(self.a - other.a) <= 0.05 * np.abs(other.a))
            and np.all(np.abs(self.b - other.b) <= 0.05)
        )


def hypotheses(mean: np.ndarray, std: np.ndarray) -> list[Hypothesis]:
    """The contract's own pipeline first, then each known mistake that differs from it.

    ``mean`` and ``std`` are the training normalization in [0, 1] units. A mistake
    that yields the same tensor as the contract (serving [-1, 1] to a [-1, 1] model)
    is dropped; of two mistakes that coincide (forgetting /255 on a [0, 1] model
    is serving [0, 255]) the first, more specific name is kept.
    """
    m = np.asarray(mean, dtype=np.float64)
    s = np.asarray(std, dtype=np.float64)
    ones = np.ones_like(m)
    zeros = np.zeros_like(m)
    found = [
        Hypothesis("contract", "", "the contract's pipeline", s, m),
        Hypothesis(
            "scale_255", "scale_255",
            "/255 forgotten: 0-255 pixel values normalized with the [0, 1] mean/std",
            s / 255.0, m / 255.0,
        ),
        Hypothesis(
            "double_255", "double_scaled", "/255 applied twice (values ~255x too small)",
            255.0 * s, 255.0 * m,
        ),
        Hypothesis(
            "double_norm", "double_scaled", "mean/std normalization applied twice",
            s * s, s * m + m,
        ),
        Hypothesis("range_0_255", "range", "[0, 255] pixel values, no normalization",
                   ones / 255.0, zeros),
        Hypothesis("range_0_1", "range", "[0, 1] values, no mean/std normalization", ones, zeros),
        Hypothesis("range_pm1", "range", "[-1, 1] values (mean = std = 0.5)",
                   ones * 0.5, ones * 0.5),
    ]
    if m.shape[0] == 3:
        found.append(Hypothesis(
            "range_imagenet", "range", "ImageNet mean/std normalization",
            np.asarray(IMAGENET_STD), np.asarray(IMAGENET_MEAN),
        ))
    kept: list[Hypothesis] = []
    for h in found:
        if not any(h.same_map(k) for k in kept):
            kept.append(h)
    return kept


def raw_extremes(stats: ImageStats, h: Hypothesis) -> tuple[np.ndarray, np.ndarray]:
    """Per-image raw min and max ``(N, C)`` under ``h`` (its maps are increasing)."""
    return stats.min * h.a + h.b, stats.max * h.a + h.b


def images_inside(
    low: np.ndarray, high: np.ndarray, support: tuple[np.ndarray, np.ndarray], margin: np.ndarray,
) -> np.ndarray:
    """Which images ``(N,)`` keep every channel inside the support widened by ``margin``."""
    lo, hi = support
    return np.all((low >= lo - margin) & (high <= hi + margin), axis=1)


def coverage_gap(
    low: np.ndarray, high: np.ndarray, coverage: tuple[np.ndarray, np.ndarray],
    tolerance: np.ndarray,
) -> float:
    """How far the batch's ends are from the contract's, in units of the tolerance.

    Per channel and end: the distance between the batch's extreme and the end of the
    range training pixels cover, as a share of that range, divided by how far
    training batches themselves fell short at that end (``tolerance``, shape
    ``(2, C)``: low ends, high ends). A varied batch served correctly scores <= 1 at
    every end; the result is the worst end.
    """
    lo, hi = coverage
    span = np.maximum(hi - lo, 1e-12)
    gaps = np.stack((np.abs(low.min(axis=0) - lo) / span, np.abs(hi - high.max(axis=0)) / span))
    return float(np.max(gaps / tolerance))


def false_alarm_batch_size(rate: float, target: float) -> int | None:
    """Smallest batch size ``n`` with ``rate ** n <= target``; None when ``rate`` is too high.

    ``rate`` is how often a correctly served training image already looks like the
    mistake; a batch is only called when every image in it does, and that is
    unlikely by chance for ``n`` of them (images of a batch taken as independent).
    """
    if rate >= 0.5:
        return None
    if rate <= 0.0:
        return 1
    return max(1, int(np.ceil(np.log(target) / np.log(rate) - 1e-9)))


# Per-image scaling leaves a fingerprint no correctly normalized batch has: every
# image lands on the same canonical statistics. EPS is the headroom for measuring
# them on the pixel grid (a per-image mean on ~4,096 grid pixels sits within a few
# hundredths of a standard deviation of the full-image mean).
PER_IMAGE_EPS = 0.05


def per_image_signatures(stats: ImageStats, eps: float = PER_IMAGE_EPS) -> dict[str, np.ndarray]:
    """For each per-image scaling, which images ``(N,)`` carry its fingerprint."""
    gmin = stats.min.min(axis=1)
    gmax = stats.max.max(axis=1)
    # A nearly flat channel (saturated, black) hits the std floor every implementation
    # has (max(std, eps)) and comes out with std < 1; the mean is 0 regardless.
    centred = np.all((np.abs(stats.mean) < eps) & (stats.std < 1.0 + eps), axis=1)
    return {
        "standardize_channel": centred & np.any(np.abs(stats.std - 1.0) < eps, axis=1),
        "standardize_image": (np.abs(stats.global_mean()) < eps)
        & (np.abs(stats.global_std() - 1.0) < eps),
        "minmax_01": (np.abs(gmin) < eps) & (np.abs(gmax - 1.0) < eps),
        "minmax_pm1": (np.abs(gmin + 1.0) < 2 * eps) & (np.abs(gmax - 1.0) < 2 * eps),
    }


PER_IMAGE_DESCRIPTIONS = {
    "standardize_channel": "each image standardized per channel (mean 0, std 1)",
    "standardize_image": "each image standardized over all channels (mean 0, std 1)",
    "minmax_01": "each image min-max scaled to [0, 1]",
    "minmax_pm1": "each image min-max scaled to [-1, 1]",
}
