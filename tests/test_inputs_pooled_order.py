"""RGB/BGR on varied photos: no image confirms the order alone, a diverse batch's mean does.

The population imitates natural photos: every image has its own colour cast (a blue sky,
a sunset), spread on both sides of neutral, with a warm average (ImageNet's mean pixel
has red above blue). One image's chromaticity and its mirror are both plausible, so the
per-image test cannot call a swap; the mean over a batch of such images can.
"""

from __future__ import annotations

import pytest
import torch

from prepwatch.checks.inputs.faults import MISTAKES, correct
from prepwatch.checks.inputs.monitor import Declared, InputMonitor
from prepwatch.context import Context

torch.set_num_threads(1)
DECLARED = Declared.imagenet()


def photos(n: int, seed: int, scene_cast: float | None = None) -> torch.Tensor:
    """(n, 3, 32, 32) in [0, 1]: textured scenes, each with its own colour cast."""
    g = torch.Generator().manual_seed(seed)
    base = 0.2 + 0.6 * torch.rand(n, 1, 1, 1, generator=g)
    cast = 0.06 + 0.12 * torch.randn(n, 1, 1, 1, generator=g)
    if scene_cast is not None:  # one scene: every image has the same cast
        cast = torch.full_like(cast, scene_cast)
    lum = (base + 0.15 * torch.randn(n, 1, 32, 32, generator=g)).clamp(0.02, 0.98)
    return torch.cat([lum * (1 + 1.5 * cast), lum, lum * (1 - 1.5 * cast)], 1).clamp(0, 1)


@pytest.fixture(scope="module")
def monitor():
    mon = InputMonitor(Context.create(), declared=DECLARED, sample_every=1)
    raw = photos(2048, 0)
    for i in range(0, raw.shape[0], 64):
        mon.record(correct(raw[i: i + 64], DECLARED))
        mon.flush()
    mon.use(mon.contract())
    yield mon
    mon.close()


def test_contract_says_per_image_cannot_tell_but_a_batch_can(monitor):
    c = monitor.reference
    assert c.channel_order_verifiable and not c.channel_per_image_verifiable
    mean, std, need = c.channel_pooled
    assert mean > 0 and std > mean  # warm on average, casts on both sides of neutral
    assert 16 <= need <= 128


def test_swapped_batches_are_called_and_correct_ones_are_not(monitor):
    need = monitor.reference.channel_pooled[2]
    n = 2 * need
    swapped = [monitor.guard(MISTAKES["bgr"].make(photos(n, 100 + k), DECLARED)) for k in range(40)]
    served = [monitor.guard(correct(photos(n, 200 + k), DECLARED)) for k in range(40)]
    assert sum(r.channel_order == "swapped" for r in swapped) >= 38
    assert all(r.kinds == ("channel_order",) for r in swapped if r.channel_order == "swapped")
    assert not any(r.channel_order == "swapped" for r in served)
    assert sum(r.channel_order == "ok" for r in served) >= 38


def test_small_or_single_scene_batches_say_nothing(monitor):
    need = monitor.reference.channel_pooled[2]
    small = MISTAKES["bgr"].make(photos(need - 1, 7), DECLARED)
    assert monitor.guard(small).channel_order == "ambiguous"
    # one blue scene served correctly: its mean mirrors the warm average, but its images
    # do not vary like a training batch, so it is not evidence of a swap
    scene = correct(photos(2 * need, 8, scene_cast=-0.1), DECLARED)
    assert monitor.guard(scene).channel_order == "ambiguous"
