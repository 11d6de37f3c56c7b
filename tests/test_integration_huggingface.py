"""The Hugging Face Trainer integration against a hand-wrapped loop, on CPU.

A 1-layer BERT built from its config trains on synthetic tokens through the real
``transformers.Trainer``; the same data and model through ``watch.loader()`` in a
hand-written loop is the reference. Figures come from scraping the real endpoint.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
default_data_collator = transformers.default_data_collator

from frameworks import (  # noqa: E402
    TokenDataset,
    assert_share_agrees,
    delta,
    figures,
    hand_loop,
    input_bound,
    share_agrees,
    tiny_bert,
)

N, BATCH = 64, 2  # 32 batches; few, long sleeps: a busy runner stretches each wake-up
BATCHES = N // BATCH
SLOW = 0.02  # s per sample: 40 ms per batch against ~20 ms of step (tests/frameworks.py)
# accelerate's DataLoaderShard fetches one batch ahead: the Trainer's first wait holds two
# fetches and its last none. Over 32 batches that moves 1/31 of the wait out of the share.


def train_hf(tmp_path, callback, dataset, *, accumulation=1, workers=0, eval_every=0,
             eval_dataset=None, save=False, model=None):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH, gradient_accumulation_steps=accumulation,
        num_train_epochs=1, use_cpu=True, report_to=[], disable_tqdm=True,
        dataloader_num_workers=workers, logging_steps=1,
        eval_strategy="steps" if eval_every else "no", eval_steps=eval_every or None,
        save_strategy="steps" if save else "no", save_steps=eval_every or 1, save_only_model=True,
        max_grad_norm=1.0, seed=0, remove_unused_columns=False,
    )
    trainer = Trainer(model=model or tiny_bert(), args=args, train_dataset=dataset,
                      eval_dataset=eval_dataset, callbacks=[callback])
    trainer.train()
    return trainer


@pytest.mark.parametrize("accumulation", [1, 4])
def test_matches_hand_loop_with_evaluation_and_checkpoints(watch, tmp_path, accumulation):
    from prepwatch.integrations.huggingface import PrepwatchCallback

    # Evaluation (a slow eval set) and a checkpoint after every optimizer step: neither
    # may count as data wait or step time, or the share would fall far below the hand loop's.
    # hand, framework, hand: the two hand runs bracket the load the framework saw. A
    # shared machine's load can still swing between runs, so the bracket is measured again
    # (up to 3 times) until the shares agree; a real disagreement fails every round.
    for _attempt in range(3):
        hands = []
        for _ in range(2):
            before = figures(watch)
            hand_loop(watch, tiny_bert(), TokenDataset(N, SLOW), batch_size=BATCH,
                      accumulation=accumulation, collate_fn=default_data_collator)
            hands.append(delta(figures(watch), before))
            if len(hands) == 1:
                before = figures(watch)
                train_hf(tmp_path, PrepwatchCallback(), TokenDataset(N, SLOW), accumulation=accumulation,
                         eval_every=4 // accumulation, eval_dataset=TokenDataset(16, 0.005), save=True)
                hf = delta(figures(watch), before)
                periods = watch.loop.window()[-(BATCHES - 1):]
        if share_agrees(hf, hands):
            break
    hand = hands[0]
    # the Trainer fetches a whole accumulation window at once; per-batch periods would put
    # the median near zero (3 of 4 periods a few microseconds) and fake unstable step times
    assert np.percentile(periods, 50) > 0.5 * periods.mean(), periods
    for key in ("steps", "samples", "waits", "periods", "first"):
        assert hf[key] == hand[key], (key, hf, hand)
    assert hf["steps"] == BATCHES and hf["samples"] == N
    assert_share_agrees(hf, hands)
    assert input_bound(hf) and all(input_bound(h) for h in hands)  # the planted slow dataset, both ways


def test_workers_fetch_timings_and_counts(watch, tmp_path):
    from prepwatch.integrations.huggingface import PrepwatchCallback

    before = figures(watch)
    train_hf(tmp_path, PrepwatchCallback(), TokenDataset(64), accumulation=4, workers=2)
    hf = delta(figures(watch), before)
    before = figures(watch)
    hand_loop(watch, tiny_bert(), TokenDataset(64), batch_size=BATCH, accumulation=4, workers=2,
              collate_fn=default_data_collator)
    hand = delta(figures(watch), before)
    for key in ("steps", "samples", "waits", "periods", "fetches"):
        assert hf[key] == hand[key], (key, hf, hand)
    assert hf["fetches"] == 64  # every sample timed inside the Trainer's workers


@pytest.mark.parametrize("where", ["dataset", "model"])
def test_exception_in_a_step_leaves_no_state(watch, tmp_path, where):
    from prepwatch.integrations.huggingface import PrepwatchCallback

    model = None
    if where == "dataset":  # mid-way through fetching an accumulation window
        dataset = TokenDataset(N, fail_at=BATCH * 5 + 3)
    else:
        dataset = TokenDataset(N)
        model = tiny_bert()
        calls = {"n": 0}

        def boom(module, args, kwargs):
            calls["n"] += 1
            if calls["n"] == 6:
                raise RuntimeError("planted failure in the forward pass")

        model.register_forward_pre_hook(boom, with_kwargs=True)
    callback = PrepwatchCallback()
    with pytest.raises(RuntimeError, match="planted failure"):
        train_hf(tmp_path / "1", callback, dataset, accumulation=4, model=model)
    # no first-batch wait left open (the stall alert would age it)
    assert math.isnan(watch.loop.first_wait_started_perf)

    before = figures(watch)
    train_hf(tmp_path / "2", callback, TokenDataset(N, SLOW), accumulation=4,
             eval_every=4, eval_dataset=TokenDataset(16, 0.005))
    run2 = delta(figures(watch), before)
    # exactly this run's batches and periods: nothing of the interrupted pass observed late
    assert (run2["steps"], run2["samples"], run2["waits"], run2["periods"]) == \
        (BATCHES, N, BATCHES - 1, BATCHES - 1)
    assert watch.loop.excluded == 0.0
    assert 0.1 < run2["share"] <= 1.0, run2


def test_class_recall_from_trainer_evaluation(watch, tmp_path):
    from helpers import scrape, value

    from prepwatch.integrations.huggingface import PrepwatchCallback

    eval_set = TokenDataset(24, seed=1)
    trainer = train_hf(tmp_path, PrepwatchCallback(class_recall=True), TokenDataset(64),
                       accumulation=4, eval_every=1, eval_dataset=eval_set)
    samples = scrape(watch.url)
    labels = [int(x % 2) for x in eval_set.x[:, 0]]
    evaluations = (64 // BATCH) // 4  # one per optimizer step
    for cls in (0, 1):
        assert value(samples, "prepwatch_class_samples_total", split="eval", **{"class": str(cls)}) \
            == labels.count(cls) * evaluations
    # the exported recall is the last evaluation's; the Trainer's own predictions agree
    pred = trainer.predict(eval_set).predictions.argmax(-1)
    for cls in (0, 1):
        idx = [i for i, y in enumerate(labels) if y == cls]
        recall = sum(int(pred[i] == cls) for i in idx) / len(idx)
        got = value(scrape(watch.url), "prepwatch_class_recall_ratio", split="eval",
                    **{"class": str(cls)})
        assert got == pytest.approx(recall)
