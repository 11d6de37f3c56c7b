"""Can RGB be told from BGR on this data, and how: the channel-order part of the contract."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from prepwatch.checks.inputs.hypotheses import (
    false_alarm_batch_size,
)
from prepwatch.checks.inputs.tolerances import FALSE_ALARM_TARGET, POOLED_MAX_BATCH, POOLED_SEPARATION


def chromaticity(raw_means: np.ndarray, pair: Sequence[int] = (0, 2)) -> np.ndarray:
    """Per image, (red - blue) / (red + green + blue) of the raw channel means.

    A swap of the pair mirrors it; dividing by the brightness makes it the same for
    a dark and a bright copy of one scene.
    """
    i, j = pair
    total = np.maximum(raw_means.sum(axis=1), 1e-3)
    return (raw_means[:, i] - raw_means[:, j]) / total


def channel_order_evidence(d: np.ndarray) -> dict[str, Any]:
    """Can RGB be told from BGR, and on which images?

    ``d`` is each training image's chromaticity (see :func:`chromaticity`); a swap
    turns it into ``-d``. The envelope of correctly served images is their 0.1-99.9%
    range widened by a quarter of the 1-99% spread. An image whose ``d`` lies in the
    envelope but not in its mirror confirms the order ("informative"); one in the
    mirror only looks swapped. An image in both (grey, washed-out, black) says
    nothing.

    Varied natural photos rarely confirm the order one by one (a blue sky and a sunset
    mirror each other), but their *average* has a colour balance: ImageNet's mean pixel
    is warmer than it is blue. So the contract also keeps the mean and spread of ``d``;
    a batch of ``pooled.min_batch`` or more diverse images is judged by its mean (see
    norm_guard). When neither test can work the data is colour-neutral, and the guard
    reports "ambiguous" rather than guessing.
    """
    n = d.shape[0]
    mean = float(d.mean()) if n else 0.0
    std = float(d.std(ddof=1)) if n > 1 else 0.0
    pooled_batch: int | None = None
    if n > 1 and std > 0 and abs(mean) > 0:
        need = int(np.ceil((POOLED_SEPARATION * std / abs(mean)) ** 2))
        pooled_batch = need if need <= POOLED_MAX_BATCH else None
    q = np.quantile(d, [0.001, 0.01, 0.99, 0.999])
    spread = max(float(q[2] - q[1]), 1e-6)
    lo, hi = float(q[0] - 0.25 * spread), float(q[3] + 0.25 * spread)
    informative = (d >= lo) & (d <= hi) & ~((d >= -hi) & (d <= -lo))
    looks_swapped = ((d >= -hi) & (d <= -lo)) & ~((d >= lo) & (d <= hi))
    share = float(informative.mean()) if n else 0.0
    rate = (float(looks_swapped.sum()) + 1.0) / (n + 2.0)
    return {
        "pair": [0, 2],
        "envelope": [float(f"{lo:.6g}"), float(f"{hi:.6g}")],
        "informative_share": float(f"{share:.4g}"),
        "chance_rate": float(f"{rate:.4g}"),
        "min_batch": false_alarm_batch_size(rate, FALSE_ALARM_TARGET),
        "pooled": {"mean": float(f"{mean:.6g}"), "std": float(f"{std:.6g}"),
                   "min_batch": pooled_batch},
        "verifiable": bool(share >= 0.5 or pooled_batch is not None),
    }
