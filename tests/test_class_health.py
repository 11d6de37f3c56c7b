"""ClassHealth: counts and recall against a plain reference, pass semantics, errors."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pytest
import torch
from helpers import parse, value
from prometheus_client import generate_latest

from prepwatch.checks.class_health.monitor import ClassHealth
from prepwatch.context import Context

torch.set_num_threads(1)


def scrape(ctx: Context) -> dict:
    return parse(generate_latest(ctx.registry).decode())


def series(samples: dict, name: str, **labels: str) -> dict[str, float]:
    """{class: value} for samples named ``name`` whose labels include ``labels``."""
    out = {}
    for (n, lab), v in samples.items():
        d = dict(lab)
        if n == name and all(d.get(k) == val for k, val in labels.items()):
            out[d["class"]] = v
    return out


def by_label(samples: dict, name: str, label: str) -> dict[str, float]:
    return {dict(lab)[label]: v for (n, lab), v in samples.items() if n == name}


def as_labels(counts: list[int]) -> dict[str, float]:
    return {str(i): float(v) for i, v in enumerate(counts)}


def reference(batches, num_classes: int, ignore: int | None = None):
    """Per-class samples and correct predictions, one sample at a time in Python."""
    n = [0] * num_classes
    k = [0] * num_classes
    for p, t in batches:
        for pi, ti in zip(p.reshape(-1).tolist(), t.reshape(-1).tolist()):
            if ti == ignore or not 0 <= ti < num_classes:
                continue
            n[ti] += 1
            k[ti] += int(pi == ti)
    return n, k


def random_batch(gen: torch.Generator, num_classes: int, present: int, ignore: int | None = None):
    """A batch whose targets use only ``present`` of the classes (others absent)."""
    size = int(torch.randint(1, 40, (1,), generator=gen))
    classes = torch.randperm(num_classes, generator=gen)[:present]
    t = classes[torch.randint(0, present, (size,), generator=gen)]
    logits = torch.randn(size, num_classes, generator=gen)
    # make about half the predictions right so correct counts are not trivially 0
    right = torch.rand(size, generator=gen) < 0.5
    logits[right, t[right]] += 10.0
    if ignore is not None:
        t = torch.where(torch.rand(size, generator=gen) < 0.1, torch.tensor(ignore), t)
    return logits, t


@pytest.mark.parametrize("ignore", [None, -100, 7])
def test_counts_and_recall_match_reference_over_random_batches(ignore):
    c = 12
    ctx = Context.create()
    # every class named rare: the previous pass' recall is exported for rare classes only
    ch = ClassHealth(ctx, num_classes=c, ignore_index=ignore, flush_every_steps=7,
                     window_seconds=3600, rare_share=None, rare_classes=list(range(c)))
    gen = torch.Generator().manual_seed(1)
    train = []
    for _ in range(200):
        present = int(torch.randint(1, c + 1, (1,), generator=gen))
        logits, t = random_batch(gen, c, present=present, ignore=ignore)
        ch.train_predictions(logits, t)
        train.append((logits.argmax(1), t))
    passes = []
    for _ in range(3):
        batches = []
        with ch.evaluation():
            for _ in range(20):
                logits, t = random_batch(gen, c, present=3, ignore=ignore)
                ch.eval_predictions(logits, t)
                batches.append((logits.argmax(1), t))
        passes.append(batches)
    ch.flush()
    got = scrape(ctx)

    n, k = reference(train, c, ignore)
    assert series(got, "prepwatch_class_samples_total", split="train") == as_labels(n)
    assert series(got, "prepwatch_class_correct_total", split="train") == as_labels(k)
    recall = series(got, "prepwatch_class_recall_ratio", split="train")
    assert recall == pytest.approx({str(i): k[i] / n[i] for i in range(c) if n[i]})
    assert value(got, "prepwatch_accuracy_ratio", split="train") == pytest.approx(sum(k) / sum(n))

    all_eval = [b for p in passes for b in p]
    n_e, k_e = reference(all_eval, c, ignore)
    assert series(got, "prepwatch_class_samples_total", split="eval") == as_labels(n_e)
    last_n, last_k = reference(passes[-1], c, ignore)
    prev_n, prev_k = reference(passes[-2], c, ignore)
    # recall is over the last pass only; classes absent from it have no series (unknown, not 0)
    assert series(got, "prepwatch_class_recall_ratio", split="eval") == pytest.approx(
        {str(i): last_k[i] / last_n[i] for i in range(c) if last_n[i]})
    assert series(got, "prepwatch_class_recall_previous_ratio", split="eval") == pytest.approx(
        {str(i): prev_k[i] / prev_n[i] for i in range(c) if prev_n[i]})
    assert value(got, "prepwatch_accuracy_ratio", split="eval") == pytest.approx(sum(last_k) / sum(last_n))
    previous = value(got, "prepwatch_accuracy_previous_ratio", split="eval")
    assert previous == pytest.approx(sum(prev_k) / sum(prev_n))
    assert value(got, "prepwatch_eval_rounds_total", split="eval") == 3.0

    skipped = sum(int((t == ignore).sum()) for _, t in train) if ignore is not None else 0
    assert value(got, "prepwatch_class_skipped_total", split="train", reason="ignored") == skipped
    assert value(got, "prepwatch_class_skipped_total", split="train", reason="out_of_range") == 0
    assert ctx.errors.count("class_health") == 0


def test_prediction_forms_count_the_same():
    """Logits, probabilities, class indices and soft targets give identical counts."""
    c = 6
    gen = torch.Generator().manual_seed(2)
    batches = [(torch.randn(16, c, generator=gen), torch.randint(0, c, (16,), generator=gen))
               for _ in range(30)]
    results = []
    for form in ("logits", "probs", "indices", "soft_targets", "int32"):
        ctx = Context.create()
        ch = ClassHealth(ctx, num_classes=c, flush_every_steps=4)
        for logits, t in batches:
            if form == "logits":
                ch.train_predictions(logits, t)
            elif form == "probs":
                ch.train_predictions(logits.softmax(1), t)
            elif form == "indices":
                ch.train_predictions(logits.argmax(1), t)
            elif form == "soft_targets":
                ch.train_predictions(logits, torch.nn.functional.one_hot(t, c).float() * 0.9 + 0.01)
            else:
                ch.train_predictions(logits.argmax(1).int(), t.int())
        ch.flush()
        got = scrape(ctx)
        results.append((series(got, "prepwatch_class_samples_total"),
                        series(got, "prepwatch_class_correct_total")))
    assert all(r == results[0] for r in results[1:])
    assert sum(results[0][0].values()) == 16 * 30


def test_segmentation_shapes_and_ignore_index():
    """(N, C, H, W) logits with (N, H, W) targets, 255 = void, as in segmentation."""
    c = 4
    gen = torch.Generator().manual_seed(3)
    ctx = Context.create()
    ch = ClassHealth(ctx, ignore_index=255, flush_every_steps=3)
    batches = []
    for _ in range(10):
        logits = torch.randn(2, c, 5, 7, generator=gen)
        t = torch.randint(0, c, (2, 5, 7), generator=gen)
        t[:, 0, :] = 255
        ch.train_predictions(logits, t)
        batches.append((logits.argmax(1), t))
    ch.flush()
    got = scrape(ctx)
    n, k = reference(batches, c, 255)
    assert ch.num_classes == c  # inferred from dimension 1 of the logits
    assert series(got, "prepwatch_class_samples_total") == as_labels(n)
    assert series(got, "prepwatch_class_correct_total") == as_labels(k)
    assert value(got, "prepwatch_class_skipped_total", reason="ignored") == 10 * 2 * 7


def test_counts_stay_on_device_until_a_flush():
    """Nothing reaches the host before flush_every_steps steps; then everything does."""
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=3, flush_every_steps=5, flush_every_seconds=3600)
    for _ in range(4):
        ch.train_predictions(torch.randn(8, 3), torch.randint(0, 3, (8,)))
    assert sum(series(scrape(ctx), "prepwatch_class_samples_total").values()) == 0
    ch.train_predictions(torch.randn(8, 3), torch.randint(0, 3, (8,)))
    assert sum(series(scrape(ctx), "prepwatch_class_samples_total").values()) == 40


def test_flush_after_seconds_even_when_steps_are_few():
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=3, flush_every_steps=10_000, flush_every_seconds=0.05)
    ch.train_predictions(torch.randn(8, 3), torch.randint(0, 3, (8,)))
    time.sleep(0.06)
    ch.train_predictions(torch.randn(8, 3), torch.randint(0, 3, (8,)))
    assert sum(series(scrape(ctx), "prepwatch_class_samples_total").values()) == 16


def test_step_path_has_no_value_dependent_operation():
    """The step path runs on the meta device, where any op that reads values fails.

    ``.item()``, ``.tolist()``, ``.cpu()``, ``nonzero``, boolean-mask indexing and
    ``bincount`` all need the data, so they raise on meta tensors: a step path that
    works there cannot synchronize a CUDA device either.
    """
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=1000, ignore_index=-100, flush_every_steps=10**9,
                     flush_every_seconds=1e9)
    logits = torch.empty(256, 1000, device="meta")
    t = torch.empty(256, dtype=torch.int64, device="meta")
    for _ in range(50):
        ch.train_predictions(logits, t)
        ch.train_predictions(logits.argmax(1), t)
    for _ in range(50):  # one evaluation pass (training resuming would close it: a flush)
        ch.eval_predictions(logits, t)
    assert ctx.errors.count("class_health") == 0
    # a flush is where the host reads the counts: on meta that read fails, which shows
    # the meta device does catch host reads (and that a failing flush is only counted)
    ch.flush()
    assert ctx.errors.count("class_health") >= 1


def test_implicit_pass_closes_when_training_resumes():
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=2, flush_every_steps=1000, rare_classes=[0, 1])
    right = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    t = torch.tensor([0, 1])
    ch.train_predictions(right, t)
    ch.eval_predictions(right, t)
    ch.eval_predictions(right, t)
    assert ch.rounds("eval") == 0  # still open
    ch.train_predictions(right, t)
    assert ch.rounds("eval") == 1
    assert ch.recall("eval") == {"0": 1.0, "1": 1.0}
    # the next round: all wrong for class 1
    ch.eval_predictions(torch.tensor([[5.0, 0.0], [5.0, 0.0]]), t)
    ch.train_predictions(right, t)
    assert ch.rounds("eval") == 2
    assert ch.recall("eval") == {"0": 1.0, "1": 0.0}
    got = scrape(ctx)
    assert series(got, "prepwatch_class_recall_previous_ratio", split="eval") == {"0": 1.0, "1": 1.0}
    stamp = value(got, "prepwatch_eval_last_timestamp_seconds", split="eval")
    assert stamp == pytest.approx(time.time(), abs=60)


def test_inference_mode_and_no_grad_mix():
    """Evaluation under inference_mode first, then training, then no_grad evaluation."""
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=3, flush_every_steps=1)
    t = torch.tensor([0, 1, 2])
    with torch.inference_mode():
        ch.eval_predictions(torch.eye(3), t)
        ch.train_predictions(torch.eye(3), t)
    ch.train_predictions(torch.eye(3, requires_grad=True) * 2, t)
    with torch.no_grad():
        ch.eval_predictions(torch.eye(3), t)
    with torch.inference_mode():
        ch.train_predictions(torch.eye(3), t)
    ch.close()
    assert ctx.errors.count("class_health") == 0
    assert sum(series(scrape(ctx), "prepwatch_class_samples_total", split="train").values()) == 9
    assert ch.rounds("eval") == 2


def test_implicit_pass_closes_after_a_gap_and_at_close():
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=2, eval_gap_seconds=0.05)
    t = torch.tensor([0, 1])
    ch.eval_predictions(torch.tensor([[5.0, 0.0], [0.0, 5.0]]), t)
    time.sleep(0.06)
    ch.eval_predictions(torch.tensor([[5.0, 0.0], [5.0, 0.0]]), t)  # a new pass
    assert ch.rounds("eval") == 1
    assert ch.recall("eval") == {"0": 1.0, "1": 1.0}
    ch.close()
    assert ch.rounds("eval") == 2
    assert ch.recall("eval") == {"0": 1.0, "1": 0.0}
    ch.close()  # twice is fine
    assert ch.rounds("eval") == 2


def test_previous_pass_recall_is_exported_for_rare_classes_only():
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=3, rare_classes=[2], rare_share=None)
    for _ in range(2):
        with ch.evaluation():
            ch.eval_predictions(torch.eye(3), torch.tensor([0, 1, 2]))
    got = scrape(ctx)
    assert series(got, "prepwatch_class_recall_previous_ratio") == {"2": 1.0}
    assert series(got, "prepwatch_class_recall_ratio") == {"0": 1.0, "1": 1.0, "2": 1.0}


def test_explicit_passes_and_empty_pass():
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=2)
    t = torch.tensor([0, 1])
    with ch.evaluation("val"):
        ch.eval_predictions(torch.tensor([[5.0, 0.0], [0.0, 5.0]]), t, split="val")
        ch.train_predictions(torch.tensor([[5.0, 0.0], [0.0, 5.0]]), t)  # does not end an explicit pass
        ch.eval_predictions(torch.tensor([[5.0, 0.0], [5.0, 0.0]]), t, split="val")
    assert ch.rounds("val") == 1
    assert ch.recall("val") == {"0": 1.0, "1": 0.5}
    with ch.evaluation("val"):
        pass  # nothing counted: not an evaluation round
    assert ch.rounds("val") == 1
    ch.begin_eval("val")
    ch.eval_predictions(torch.tensor([[0.0, 5.0], [0.0, 5.0]]), t, split="val")
    ch.end_eval("val")
    assert ch.recall("val") == {"0": 0.0, "1": 1.0}
    assert ch.accuracy("val") == 0.5


def test_first_call_errors_name_the_fix():
    ctx = Context.create()
    ch = ClassHealth(ctx)
    with pytest.raises(ValueError, match="shape"):
        ch.train_predictions(torch.randn(8, 5), torch.randint(0, 5, (7,)))
    with pytest.raises(ValueError, match="num_classes"):
        ch.train_predictions(torch.randint(0, 5, (8,)), torch.randint(0, 5, (8,)))
    with pytest.raises(ValueError, match="class dimension"):
        ch.train_predictions(torch.randn(8), torch.randint(0, 5, (8,)))
    with pytest.raises(TypeError, match="torch.Tensor"):
        ch.train_predictions([0, 1], torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="bool"):
        ch.train_predictions(torch.randn(4, 5), torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="outside \\[0, 5\\)"):
        ch.train_predictions(torch.randn(4, 5), torch.tensor([0, 1, 5, 2]))
    with pytest.raises(ValueError, match="ignore_index=-100"):
        ch.train_predictions(torch.randn(4, 5), torch.tensor([0, 1, -100, 2]))
    multi_hot = torch.tensor([[1.0, 0, 1, 1, 0], [1, 1, 0, 0, 0]])
    with pytest.raises(ValueError, match="multi-label"):  # argmax would count class 0 twice
        ch.train_predictions(torch.randn(2, 5), multi_hot)
    with pytest.raises(ValueError, match="one device"):
        ch.train_predictions(torch.randn(4, 5, device="meta"), torch.tensor([0, 1, 2, 3]))
    ch.train_predictions(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]))  # fixed: accepted
    with pytest.raises(ValueError, match="num_classes is 5"):
        ch.eval_predictions(torch.randn(4, 6), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="already receives training"):
        ch.eval_predictions(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]), split="train")
    with pytest.raises(ValueError, match="predictions contain class 9"):
        ch.eval_predictions(torch.tensor([0, 9, 1, 1]), torch.tensor([0, 1, 2, 3]))
    assert ctx.errors.count("class_health") == 0


def test_set_up_options_are_checked():
    ctx = Context.create()
    with pytest.raises(ValueError, match="max_classes"):
        ClassHealth(ctx, max_classes=0)
    with pytest.raises(ValueError, match="not both"):
        ClassHealth(ctx, rare_share=0.5, rare_quantile=0.1)
    with pytest.raises(ValueError, match="rare_share"):
        ClassHealth(ctx, rare_share=2.0)
    with pytest.raises(ValueError, match="class_names has 2 names"):
        ClassHealth(ctx, num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="not one of the class names"):
        ClassHealth(ctx, num_classes=2, class_names=["a", "b"], rare_classes=["c"])
    with pytest.raises(ValueError, match="outside"):
        ClassHealth(ctx, num_classes=2, rare_classes=[2])
    with pytest.raises(ValueError, match="ignore_index"):
        ClassHealth(ctx, ignore_index="void")


def test_runtime_errors_are_counted_not_raised():
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=4, flush_every_steps=1)
    ch.train_predictions(torch.randn(4, 4), torch.tensor([0, 1, 2, 3]))
    ch.train_predictions(torch.randn(4, 4), torch.tensor([0, 1, 2]))  # wrong shape, later on
    ch.train_predictions(torch.randn(4, 4), torch.tensor([0, 1, 9, -3]))  # values not checked per step
    assert ctx.errors.count("class_health") == 1
    got = scrape(ctx)
    assert value(got, "prepwatch_class_skipped_total", split="train", reason="out_of_range") == 2
    assert sum(series(got, "prepwatch_class_samples_total").values()) == 6


def test_out_of_range_warning_is_logged_once(caplog):
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=4, flush_every_steps=1)
    ch.train_predictions(torch.randn(2, 4), torch.tensor([0, 1]))
    with caplog.at_level(logging.WARNING, logger="prepwatch"):
        for _ in range(5):
            ch.train_predictions(torch.randn(2, 4), torch.tensor([7, 1]))
    assert sum("outside [0, 4)" in r.getMessage() for r in caplog.records) == 1


def test_rare_classes_from_label_share():
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=5, class_names=["a", "b", "c", "d", "e"],
                     rare_min_samples=500, flush_every_steps=1)
    gen = torch.Generator().manual_seed(4)
    probs = torch.tensor([0.3, 0.3, 0.3, 0.08, 0.02])  # d: 8% of 20% uniform, e: 2%
    t = torch.multinomial(probs, 400, replacement=True, generator=gen)
    ch.train_predictions(torch.randn(400, 5), t)
    assert ch.rare_classes() == []  # 400 < rare_min_samples: not decided
    assert series(scrape(ctx), "prepwatch_class_rare") == {}
    t = torch.multinomial(probs, 4000, replacement=True, generator=gen)
    ch.train_predictions(torch.randn(4000, 5), t)
    assert ch.rare_classes() == ["d", "e"]
    assert series(scrape(ctx), "prepwatch_class_rare") == {"a": 0, "b": 0, "c": 0, "d": 1, "e": 1}


def test_balanced_labels_have_no_rare_class_but_quantile_marks_the_lowest():
    gen = torch.Generator().manual_seed(5)
    t = torch.randint(0, 10, (5000,), generator=gen)
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=10, flush_every_steps=1)
    ch.train_predictions(torch.randn(5000, 10), t)
    assert ch.rare_classes() == []
    ctx2 = Context.create()
    ch2 = ClassHealth(ctx2, num_classes=10, rare_share=None, rare_quantile=0.1, flush_every_steps=1)
    ch2.train_predictions(torch.randn(5000, 10), t)
    counts = torch.bincount(t, minlength=10)
    assert ch2.rare_classes() == [str(int(counts.argmin()))]


def test_named_rare_classes_and_names_are_sanitized():
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=3, class_names={0: 'barn "spider"\n', 2: "web"},
                     rare_classes=['barn "spider"\n'], rare_share=None)
    ch.train_predictions(torch.randn(3, 3), torch.tensor([0, 1, 2]))
    ch.flush()
    rare = series(scrape(ctx), "prepwatch_class_rare")
    assert rare == {"barn _spider_": 1.0, "1": 0.0, "web": 0.0}


def test_cardinality_guard_keeps_rare_and_worst_and_sums_the_rest(caplog):
    c = 50
    with caplog.at_level(logging.WARNING, logger="prepwatch"):
        ctx = Context.create()
        ch = ClassHealth(ctx, num_classes=c, max_classes=10, worst_k=3, rare_classes=[49],
                         rare_share=None, flush_every_steps=1)
    assert sum("max_classes=10" in r.getMessage() for r in caplog.records) == 1
    gen = torch.Generator().manual_seed(6)
    total = 0
    for _ in range(40):
        t = torch.randint(0, c, (64,), generator=gen)
        logits = torch.randn(64, c, generator=gen)
        good = t >= 3  # classes 0, 1, 2 are always wrong: the worst
        logits[good, t[good]] += 10
        ch.train_predictions(logits, t)
        with ch.evaluation():
            ch.eval_predictions(logits, t)
        total += 64
        got = scrape(ctx)
        samples = series(got, "prepwatch_class_samples_total", split="train")
        assert sum(samples.values()) == total  # own series + _other is exact
        assert len(samples) <= 10 + 1
    assert {"49", "0", "1", "2", "_other"} <= set(samples)
    assert value(got, "prepwatch_classes", kind="exported") <= 10
    assert series(got, "prepwatch_class_rare") == {k: float(k == "49") for k in samples if k != "_other"}
    assert "_other" in series(got, "prepwatch_class_recall_ratio", split="eval")


def test_report_augmentation():
    ctx = Context.create()
    ch = ClassHealth(ctx)
    ch.report_augmentation(crop_scale_min=0.08, cutout_holes=2)
    ch.report_augmentation(cutout_holes=3)
    got = scrape(ctx)
    params = by_label(got, "prepwatch_augmentation_param", "name")
    assert params == {"crop_scale_min": 0.08, "cutout_holes": 3}
    ch.report_augmentation(strength=torch.tensor(0.5), cutout_holes=4)  # counted, not raised
    assert ctx.errors.count("class_health") == 1
    params = by_label(scrape(ctx), "prepwatch_augmentation_param", "name")
    assert params == {"crop_scale_min": 0.08, "cutout_holes": 4}


def test_window_recall_forgets_old_training_counts():
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=2, flush_every_steps=1, window_seconds=0.2)
    t = torch.tensor([0, 1])
    ch.train_predictions(torch.tensor([[5.0, 0.0], [0.0, 5.0]]), t)  # all right
    time.sleep(0.25)
    ch.train_predictions(torch.tensor([[0.0, 5.0], [5.0, 0.0]]), t)  # all wrong
    assert ch.recall("train") == {"0": 0.0, "1": 0.0}
    got = scrape(ctx)
    assert series(got, "prepwatch_class_correct_total") == {"0": 1.0, "1": 1.0}  # totals keep all


def test_through_the_watch(watch):
    """The Watch's methods reach the component and the endpoint serves the series."""
    from helpers import scrape as http_scrape

    ch = watch.class_health(num_classes=3, class_names=["cat", "dog", "eel"], flush_every_steps=1)
    assert watch.class_health() is ch
    watch.class_health().train_predictions(torch.tensor([[5.0, 0, 0], [0, 0, 5.0]]), torch.tensor([0, 1]))
    watch.class_health().eval_predictions(torch.tensor([[5.0, 0, 0], [0, 5.0, 0]]), torch.tensor([0, 1]))
    watch.class_health().report_augmentation(cutout=0.5)
    watch.class_health().train_predictions(torch.tensor([[5.0, 0, 0]]), torch.tensor([0]))
    got = http_scrape(watch.url)
    assert value(got, "prepwatch_class_recall_ratio", split="eval", **{"class": "dog"}) == 1.0
    assert value(got, "prepwatch_class_recall_ratio", split="train", **{"class": "dog"}) == 0.0
    assert by_label(got, "prepwatch_augmentation_param", "name") == {"cutout": 0.5}
    assert value(got, "prepwatch_class_samples_total", run="test", split="train") == 3
    assert not math.isnan(value(got, "prepwatch_accuracy_ratio", split="eval"))


class _Copy:
    """Stands in for a CUDA event in the asynchronous-flush queue (no GPU here)."""

    def __init__(self, done: bool) -> None:
        self.done = done
        self.waited = False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.waited = True
        self.done = True


def test_async_copies_are_folded_in_order_and_never_waited_for():
    from collections import deque

    from prepwatch.checks.class_health.counts import DeviceCounts, drain

    delivered = []
    counts = DeviceCounts("eval", 2, torch.device("cpu"), None, lambda *a: None, lambda item: None, 50, 10)

    def deliver(split, samples, correct, closes_pass):
        delivered.append((split, samples.tolist(), correct.tolist(), closes_pass))

    def host(samples, correct):
        return torch.tensor([0, *samples, 0, 0, 0, *correct, 0, 0])

    first, second, third = _Copy(True), _Copy(False), _Copy(True)
    pending = deque([(first, host([3, 1], [2, 0]), counts, False),
                     (second, host([1, 1], [1, 1]), counts, True),  # the pass ends with this copy
                     (third, host([5, 5], [0, 0]), counts, False)])
    drain(pending, deliver)
    # the second copy is still in flight: the third waits behind it even though it is done
    assert [d[1] for d in delivered] == [[0, 3, 1, 0, 0]]
    assert len(pending) == 2 and not second.waited
    drain(pending, deliver, wait=True)  # close(): wait for everything
    assert second.waited
    assert [d[3] for d in delivered] == [False, True, False]
    assert delivered[1][1:3] == ([0, 1, 1, 0, 0], [0, 1, 1, 0, 0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_device_sync_on_cuda_steps_and_flushes():
    """On a GPU: steps and the periodic (asynchronous) flushes never synchronize."""
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=1000, ignore_index=-100, flush_every_steps=5)
    gen = torch.Generator().manual_seed(7)
    batches = [(torch.randn(256, 1000, generator=gen), torch.randint(0, 1000, (256,), generator=gen))
               for _ in range(30)]
    on_gpu = [(logits.cuda(), t.cuda()) for logits, t in batches]
    ch.train_predictions(*on_gpu[0])  # first call: set-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for logits, t in on_gpu[1:]:
            ch.train_predictions(logits, t)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ch.close()
    n, k = reference([(lg.argmax(1), t) for lg, t in batches], 1000)
    got = scrape(ctx)
    assert series(got, "prepwatch_class_samples_total") == as_labels(n)
    assert series(got, "prepwatch_class_correct_total") == as_labels(k)
    assert ctx.errors.count("class_health") == 0


def test_cardinality_guard_keeps_room_for_the_worst_and_promotes_the_rarest_first():
    """A long tail with more rare classes than series: not the lowest indices, the rarest."""
    from prepwatch.checks.class_health.export import Selection

    c, cap, worst_k = 60, 10, 3
    samples = np.full(c, 500, dtype=np.int64)
    samples[30:] = (60 - np.arange(30, 60)) * 3  # classes 30..59 rare; 59 the rarest
    rare = np.zeros(c, dtype=bool)
    rare[30:] = True
    recall = np.full(c, 0.9)
    recall[[4, 5, 6]] = [0.1, 0.2, 0.3]  # frequent classes, the worst
    sel = Selection(c, cap, worst_k)
    sel.update(rare, None, {"train": (samples, samples // 2)})  # before any evaluation
    assert set(np.flatnonzero(sel.own)) == set(range(53, 60))  # room left for the worst
    sel.update(rare, recall, {"train": (samples, samples // 2)})
    assert set(np.flatnonzero(sel.own)) == set(range(53, 60)) | {4, 5, 6}
