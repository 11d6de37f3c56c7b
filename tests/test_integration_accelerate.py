"""The Accelerate recipe (docs/integrations.md) against a hand-wrapped plain loop, on CPU."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("accelerate")

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
SLOW = 0.02  # s per sample: 40 ms per batch against ~20 ms of step (tests/frameworks.py)


def accelerate_loop(watch, dataset, *, accumulation, workers=0):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    model = tiny_bert()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    dl = torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=workers)
    model, opt, dl = accelerator.prepare(model, opt, dl)
    model.train()
    for batch in watch.loader(dl):  # the recipe's one line
        with accelerator.accumulate(model):
            accelerator.backward(model(**batch).loss)
            opt.step()
            opt.zero_grad()
    return accelerator


@pytest.mark.parametrize("accumulation,workers", [(1, 0), (4, 0), (4, 2)])
def test_recipe_matches_hand_loop(watch, accumulation, workers):
    from prepwatch.integrations.accelerate import start

    slow = SLOW if workers == 0 else 0.0
    # hand, Accelerate, hand bracket the load; measured again (up to 3 times) while a
    # shared machine's load swings the shares apart (a real disagreement fails every round)
    for _attempt in range(3):
        hands = []
        for _ in range(2 if not workers else 1):
            before = figures(watch)
            hand_loop(watch, tiny_bert(), TokenDataset(N, slow), batch_size=BATCH,
                      accumulation=accumulation, workers=workers)
            hands.append(delta(figures(watch), before))
            if len(hands) == 1:
                before = figures(watch)
                accelerator = accelerate_loop(watch, TokenDataset(N, slow), accumulation=accumulation,
                                              workers=workers)
                acc = delta(figures(watch), before)
        if workers or share_agrees(acc, hands):
            break
    hand = hands[0]
    assert start(accelerator) is watch  # rank from the Accelerator; the running Watch kept
    for key in ("steps", "samples", "waits", "periods", "first", "fetches"):
        assert acc[key] == hand[key], (key, acc, hand)
    assert acc["steps"] == N // BATCH and acc["samples"] == N
    if workers:
        assert acc["fetches"] == N  # timed inside the prepared loader's workers
    else:
        assert_share_agrees(acc, hands)
        assert input_bound(acc) and all(input_bound(h) for h in hands)
