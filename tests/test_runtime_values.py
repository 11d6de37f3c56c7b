"""Runtime values are counted, never raised, and never corrupt what is exported
(issue 12, items 7-9)."""

from __future__ import annotations

import torch
from helpers import scrape, value

from prepwatch.checks.class_health import ClassHealth
from prepwatch.context import Context


def test_a_negative_or_huge_batch_size_never_moves_samples_backwards(watch):
    answers = iter([4, -1000, 10**30, 6, -5])
    list(watch.loader([[1], [2], [3], [4], [5]], batch_size=lambda b: next(answers)))
    s = scrape(watch.url)
    assert value(s, "prepwatch_steps_total") == 5
    assert value(s, "prepwatch_samples_total") == 10  # 4 + 6: the rest are refused
    assert watch.ctx.errors.count("loader") == 3


def test_a_batch_size_that_is_always_negative_falls_back_to_the_shape(watch):
    list(watch.loader([torch.zeros(3, 2)] * 4, batch_size=lambda b: -1000))
    samples = value(scrape(watch.url), "prepwatch_samples_total")
    assert samples is not None and samples >= 0


def test_flush_and_close_go_on_past_a_failing_split():
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=10)
    ch.train_predictions(torch.randn(8, 10, device="meta"), torch.zeros(8, dtype=torch.long,
                                                                         device="meta"), split="aux")
    for _ in range(10):
        ch.train_predictions(torch.randn(8, 10), torch.randint(0, 10, (8,)))
    ch.flush()
    assert ch._stats["train"].samples.sum() == 80
    for _ in range(5):
        ch.eval_predictions(torch.randn(4, 10), torch.randint(0, 10, (4,)), split="eval")
    ch.close()
    assert ch.rounds("eval") == 1
    assert ctx.errors.count("class_health") >= 1


def test_logits_with_more_classes_than_configured_are_not_counted():
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=10)
    targets = torch.arange(10)
    ch.train_predictions(torch.eye(10) * 5, targets)  # all right
    wide = torch.zeros(10, 12)
    wide[:, 11] = 9.0  # argmax 11: a class the set-up does not have
    ch.train_predictions(wide, targets)
    ch.flush()
    assert ch._stats["train"].samples.sum() == 10
    assert ch._stats["train"].correct.sum() == 10
    assert ctx.errors.count("class_health") == 1


def test_a_tensor_augmentation_value_is_counted_not_raised():
    ctx = Context.create()
    ch = ClassHealth(ctx)
    for _ in range(3):
        ch.report_augmentation(x=torch.tensor(1.0), y=0.5)
    assert ctx.errors.count("class_health") == 3
