"""Evidence on a real model: each serving mistake costs accuracy and the guard names it.

A small CNN is trained here (a few seconds of CPU) on synthetic photos with
ImageNet-style normalization while the contract is recorded from the tensors it
receives. It is then evaluated with correct inputs and with every known mistake;
the guard must name each mistake's kind on every batch of a varied eval set, and
raise nothing on 1,000+ correctly served batches of varied content (dark, bright,
low-contrast, single-class batches, 1 to 64 images). Run with ``-s`` to see the
table of accuracy drops.
"""

from __future__ import annotations

import pytest
import torch

from prepwatch.checks.inputs.faults import MISTAKES, correct
from prepwatch.checks.inputs.monitor import Declared, InputMonitor
from prepwatch.context import Context
from prepwatch.demo.normalization_scenes import (
    evidence,
    make_scenes,
    train_scene_model,
    varied_batches,
)

torch.set_num_threads(1)
FALSE_ALARM_BATCHES = 1000


def _contract_monitor(declared: Declared, raw: torch.Tensor, cast_seed: int = 0) -> InputMonitor:
    monitor = InputMonitor(Context.create(), declared=declared, sample_every=1, seed=cast_seed)
    for i in range(0, raw.shape[0], 64):
        monitor.record(correct(raw[i: i + 64], declared))
        if i % 1024 == 0:
            monitor.flush()
    monitor.use(monitor.contract())
    return monitor


@pytest.fixture(scope="module")
def trained():
    declared = Declared.imagenet()
    raw, labels = make_scenes(3000, 0)
    monitor = InputMonitor(Context.create(), declared=declared, sample_every=1)
    model = train_scene_model(raw, labels, declared, seconds=60, seed=0,
                              on_batch=monitor.record)
    monitor.use(monitor.contract())
    yield model, monitor, declared
    monitor.close()


def test_each_mistake_costs_accuracy_and_is_named(trained) -> None:
    model, monitor, declared = trained
    eval_raw, eval_labels = make_scenes(64 * 20, 1)
    clean, rows = evidence(model, monitor.guard, declared, eval_raw, eval_labels)
    print(f"\nclean accuracy {clean:.1%} ({eval_raw.shape[0]} images, batches of 64)")
    for row in rows:
        print(row.line(clean))
    assert clean > 0.7, "the model did not learn; the evidence would say nothing"
    by_name = {row.mistake: row for row in rows}
    for row in rows:
        if row.expected is None:  # coincides with the contract's own pipeline
            assert row.flagged == 0, row.line(clean)
            continue
        assert row.named == row.batches, f"guard missed or misnamed: {row.line(clean)}"
        if row.expected not in ("dtype", "layout"):
            assert set(row.kinds) == {row.expected}, f"extra kinds: {row.line(clean)}"
    # Every mistake costs accuracy; some take the model to chance. (A ReLU/BatchNorm net is
    # nearly scale-invariant, so a 255x scale error costs less than a shift: measured.)
    for row in rows:
        if row.expected is not None:
            assert row.accuracy < clean, row.line(clean)
    for name in ("double_255", "served_0_1", "nhwc", "bgr"):
        assert clean - by_name[name].accuracy > 0.3, by_name[name].line(clean)


def test_no_false_alarm_on_varied_correct_batches(trained) -> None:
    _, monitor, declared = trained
    alarms = []
    orders = {"ok": 0, "ambiguous": 0}
    images = 0
    for theme, raw, _ in varied_batches(FALSE_ALARM_BATCHES, seed=7):
        result = monitor.guard(correct(raw, declared))
        images += raw.shape[0]
        if not result.ok:
            alarms.append((theme, raw.shape[0], result.kinds, result.detail))
        orders[result.channel_order] = orders.get(result.channel_order, 0) + 1
    print(f"\n{FALSE_ALARM_BATCHES} correct batches ({images} images): {len(alarms)} alarms; "
          f"channel order {orders}")
    assert not alarms, alarms[:5]
    assert orders["ok"] > FALSE_ALARM_BATCHES // 2  # the order was confirmed, not just unasked


@pytest.mark.parametrize("declared", [Declared.symmetric(), Declared.unit()],
                         ids=["pm1_contract", "unit_contract"])
def test_other_contract_conventions(declared: Declared) -> None:
    """The seed's case ([-1, 1] training, [0, 255] serving) and a plain [0, 1] model."""
    raw, _ = make_scenes(2048, 3)
    monitor = _contract_monitor(declared, raw)
    eval_raw, _ = make_scenes(64 * 8, 4)
    for name, mistake in MISTAKES.items():
        expected = mistake.expected_kind(declared)
        for i in range(0, eval_raw.shape[0], 64):
            result = monitor.guard(mistake.make(eval_raw[i: i + 64], declared))
            if expected is None:
                assert result.ok, (name, result)
            else:
                assert expected in result.kinds, (name, result)
    alarms = [
        (theme, raw.shape[0], monitor.guard(correct(raw, declared)).detail)
        for theme, raw, _ in varied_batches(300, seed=11)
    ]
    alarms = [a for a in alarms if a[2]]
    assert not alarms, alarms[:5]
    monitor.close()


def test_channel_order_ambiguous_when_channels_alike() -> None:
    """Without a colour cast no statistic tells RGB from BGR: say so, never guess."""
    declared = Declared.imagenet()
    raw, _ = make_scenes(2048, 5, cast=None)
    monitor = _contract_monitor(declared, raw)
    assert not monitor.reference.channel_order_verifiable
    eval_raw, _ = make_scenes(64 * 4, 6, cast=None)
    for i in range(0, eval_raw.shape[0], 64):
        swapped = monitor.guard(MISTAKES["bgr"].make(eval_raw[i: i + 64], declared))
        assert swapped.ok and swapped.channel_order == "ambiguous"
        clean = monitor.guard(correct(eval_raw[i: i + 64], declared))
        assert clean.ok and clean.channel_order == "ambiguous"
    # the other kinds are still named on this contract
    bad = monitor.guard(MISTAKES["served_0_1"].make(eval_raw[:64], declared))
    assert bad.kinds == ("range",)
    monitor.close()


def _augment(raw: torch.Tensor, declared: Declared, g: torch.Generator) -> torch.Tensor:
    """Training-only augmentation: brightness/contrast jitter, then random erasing with
    N(0, 1) noise in normalized units (values beyond the physical range)."""
    u = raw.float() / 255.0
    n = u.shape[0]
    mean = u.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=g)
    brightness = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=g)
    u = (((u - mean) * contrast + mean) * brightness).clamp(0, 1)
    x = correct((u * 255.0).round().to(torch.uint8), declared)
    erase = torch.rand(n, generator=g) < 0.25
    x[erase, :, 4:14, 6:18] = torch.randn(int(erase.sum()), 3, 10, 12, generator=g)
    return x


def test_contract_from_augmented_training_serves_clean_input() -> None:
    """Tolerances come from robust statistics: noisy training augmentation (values far
    outside [0, 1]) neither raises alarms on clean serving nor hides the mistakes."""
    declared = Declared.imagenet()
    raw, _ = make_scenes(3000, 8)
    g = torch.Generator().manual_seed(8)
    monitor = InputMonitor(Context.create(), declared=declared, sample_every=1)
    for i in range(0, raw.shape[0], 64):
        monitor.record(_augment(raw[i: i + 64], declared, g))
        monitor.flush()
    monitor.use(monitor.contract())
    support_low = monitor.reference.support[0]
    assert (support_low < -0.1).all()  # the erasing noise widened what is allowed
    alarms = []
    for theme, batch, _ in varied_batches(400, seed=9):
        result = monitor.guard(correct(batch, declared))
        if not result.ok:
            alarms.append((theme, batch.shape[0], result.kinds, result.detail))
    assert not alarms, alarms[:5]
    eval_raw, _ = make_scenes(64 * 8, 10)
    for name, mistake in MISTAKES.items():
        expected = mistake.expected_kind(declared)
        for i in range(0, eval_raw.shape[0], 64):
            result = monitor.guard(mistake.make(eval_raw[i: i + 64], declared))
            assert (expected in result.kinds) if expected else result.ok, (name, result)
    monitor.close()
