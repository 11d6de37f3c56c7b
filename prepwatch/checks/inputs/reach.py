"""Does a batch reach the ends of the training range? A test calibrated per batch size.

A mistake that shrinks values into the trained range ([0, 1] served to a model trained
on standardized inputs, ``/255`` twice, [-1, 1] served to a [0, 1] model) shows as a
batch that, read through the contract's pipeline, *falls short* of where correct batches
of its size reach; read through the right mistake it reaches them. How far a correct
batch reaches depends on the data (a narrow or noisy channel) and on the batch size (the
min of 256 images lies lower than the min of 8), so both thresholds come from the
recorded training images themselves:

A correct batch of ``n`` independent images has raw minimum above ``t`` in a channel
only if all ``n`` images do: ``P = S(t) ** n`` with ``S`` the share of training images
whose own minimum is above ``t``. So the level a correct batch of ``n`` falls short of
with probability ``alpha`` is the ``1 - alpha ** (1 / n)`` quantile of the per-image
minimums (and the ``alpha ** (1 / n)`` quantile of the per-image maximums at the top).
That is the null distribution a resampling of recorded images would give, exactly,
without drawing. The contract keeps the per-image minimum and maximum quantiles of each
channel (raw units) and:

- *falls short* (the contract's reading): beyond the ``FALSE_ALARM_TARGET`` level,
  split over the ``2 C`` ends, and beyond the least far any recorded training batch
  reached at that end (batches whose images are alike, a dim or foggy set, are the
  dependence the independent-images level does not cover);
- *reaches* (a mistake's reading): within the ``REACH_MISS`` level at every end, the
  band where a correct batch of that size lands but for one time in ``1 / REACH_MISS``
  per end. Overshoot is a separate, signed matter: a mistake's reading may go beyond
  the ends of the bulk of training pixels (pixel noise, a wider channel) by up to
  ``OVERSHOOT`` of the range, and its images must stay inside the support (checked
  apart, with the support margin).

Images within a batch are taken as independent, as for the other chance rates (a batch
of near-duplicates reaches less far: the test then needs a varied batch).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prepwatch.checks.inputs.stats import ImageStats
from prepwatch.checks.inputs.tolerances import COVERAGE_FLOOR

LEVELS = 129  # quantile levels kept per channel and end (0, 1/128, ..., 1)
# Miss rate per end of the "reaches" reading: how often a correctly read batch would be
# refused the hypothesis (at most 2 C ends: 0.6% for 3 channels).
REACH_MISS = 1e-3
# Half a uint8 level in raw units: ends compare within rounding (float32 arithmetic of a
# mistake's reading lands a pixel at 1e-8, not 0; a batch quantized to 8 bits moves by
# up to half a level), in the direction that neither calls nor refuses on it.
SLACK = 0.5 / 255.0
# Overshoot of a mistake's reading beyond the ends of the bulk of training pixels (0.1% /
# 99.9%), as a share of that range: noise, a wider image or resampling put a batch's
# extremes a little past them (the real narrow, noisy channels of issue 14 did), a reading
# through the wrong map lands far past (a foggy batch read as [-1, 1]: 0.3).
OVERSHOOT = 0.25


def reach_quantiles(
    stats: ImageStats, m: np.ndarray, s: np.ndarray, batch_min: np.ndarray, batch_max: np.ndarray,
) -> dict[str, Any]:
    """The contract's ``reach`` record: per-image raw min/max quantiles per channel, and
    the least far any recorded training batch reached at each end (``batch_min``,
    ``batch_max``: ``(batches, C)`` in model-input units)."""
    levels = np.linspace(0.0, 1.0, LEVELS)
    lo = np.quantile(stats.min * s + m, levels, axis=0).T  # (C, LEVELS)
    hi = np.quantile(stats.max * s + m, levels, axis=0).T
    return {
        "images": int(stats.n),
        "image_min": [[float(f"{v:.6g}") for v in row] for row in lo],
        "image_max": [[float(f"{v:.6g}") for v in row] for row in hi],
        "batch_low_worst": [float(f"{v:.6g}") for v in (batch_min * s + m).max(axis=0)],
        "batch_high_worst": [float(f"{v:.6g}") for v in (batch_max * s + m).min(axis=0)],
    }


class Reach:
    """The calibrated reach test of one contract (see the module docstring)."""

    def __init__(self, data: dict[str, Any], false_alarm: float) -> None:
        self.lo = np.asarray(data["image_min"], dtype=np.float64)  # (C, LEVELS)
        self.hi = np.asarray(data["image_max"], dtype=np.float64)
        self.images = int(data["images"])
        self.channels = int(self.lo.shape[0])
        # The least far a recorded training batch reached (its content, not chance): a
        # batch is only short of the range beyond what training batches themselves were.
        self.batch_low_worst = np.asarray(data.get("batch_low_worst", -np.inf * np.ones(self.channels)))
        self.batch_high_worst = np.asarray(data.get("batch_high_worst", np.inf * np.ones(self.channels)))
        self.levels = np.linspace(0.0, 1.0, self.lo.shape[1])
        self.alpha = false_alarm / (2 * self.channels)
        # Smallest batch whose shortfall level the recorded images can estimate: the
        # level's tail must hold a few images and more than one quantile step.
        floor = max(5.0 / max(self.images, 1), 1.0 / (self.lo.shape[1] - 1))
        self.min_batch = int(np.ceil(np.log(self.alpha) / np.log(floor)))

    def _at(self, table: np.ndarray, level: float) -> np.ndarray:
        return np.array([np.interp(level, self.levels, row) for row in table])

    def limits(self, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """Per channel: a correct batch of ``n`` has min above the first, or max below
        the second, each with probability ``alpha``."""
        q = alpha ** (1.0 / n)
        return self._at(self.lo, 1.0 - q), self._at(self.hi, q)

    def expected(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Median batch min and max of a correct batch of ``n`` (per channel)."""
        return self.limits(n, 0.5)

    def falls_short(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Per channel and end ``(2, C)``: the batch (per-image raw extremes ``(N, C)``)
        falls short of where a correct batch of its size reaches, beyond chance."""
        tl, th = self.limits(low.shape[0], self.alpha)
        tl, th = np.maximum(tl, self.batch_low_worst), np.minimum(th, self.batch_high_worst)
        return np.stack((low.min(axis=0) > tl + SLACK, high.max(axis=0) < th - SLACK))

    def reaches(self, low: np.ndarray, high: np.ndarray,
                coverage: tuple[np.ndarray, np.ndarray] | None = None) -> bool:
        """Every end within the band a correct batch of this size lands in: short of it
        by no more than the ``REACH_MISS`` level, and beyond the ``coverage`` ends (where
        the bulk of training pixels ends) by at most ``OVERSHOOT`` of that range."""
        al, ah = self.limits(low.shape[0], REACH_MISS)
        lo, hi = low.min(axis=0), high.max(axis=0)
        low_ok, high_ok = lo <= al + SLACK, hi >= ah - SLACK
        if coverage is None:
            return bool(np.all(low_ok) and np.all(high_ok))
        span = np.maximum(coverage[1] - coverage[0], 1e-12)
        # Training augmentation (random erasing with noise, contrast jitter) can push the
        # recorded images' extremes beyond what clean batches ever reach: an end within
        # COVERAGE_FLOOR of the bulk of training pixels also counts as reached.
        low_ok |= (lo - coverage[0]) / span <= COVERAGE_FLOOR
        high_ok |= (coverage[1] - hi) / span <= COVERAGE_FLOOR
        over = np.maximum((coverage[0] - lo) / span, (hi - coverage[1]) / span)
        return bool(np.all(low_ok) and np.all(high_ok) and np.all(over <= OVERSHOOT))

    def distance(self, low: np.ndarray, high: np.ndarray, span: np.ndarray) -> float:
        """How far the batch's ends sit from a typical correct batch's, as a share of
        the support (to rank hypotheses that all reach)."""
        el, eh = self.expected(low.shape[0])
        return float(np.sum(np.abs(low.min(axis=0) - el) / span)
                     + np.sum(np.abs(high.max(axis=0) - eh) / span))
