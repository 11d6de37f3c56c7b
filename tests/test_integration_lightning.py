"""The Lightning integration against a hand-wrapped loop, on CPU (real Trainer)."""

from __future__ import annotations

import math

import pytest
import torch

pl = pytest.importorskip("pytorch_lightning")

from frameworks import (  # noqa: E402
    ImageDataset,
    assert_share_agrees,
    delta,
    figures,
    hand_loop_images,
    input_bound,
    share_agrees,
    tiny_cnn,
)

# Lightning's own warnings (few workers, torch pytree deprecations) are not under test.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

N, BATCH = 32, 2  # 16 batches; few, long sleeps: a busy runner stretches each wake-up
BATCHES = N // BATCH
SLOW = 0.05  # s per sample: 100 ms per batch against ~15 ms of step and Lightning's own per-step
# work (a few ms idle, 10+ ms on a runner at load 30): the share compared must be the data's


class Module(pl.LightningModule):
    def __init__(self, fail_at_step: int | None = None) -> None:
        super().__init__()
        self.net = tiny_cnn()
        self.fail_at_step = fail_at_step

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.fail_at_step is not None and batch_idx == self.fail_at_step:
            raise RuntimeError("planted failure in training_step")
        if isinstance(batch, dict):  # several train loaders: one batch from each
            x = torch.cat([b[0] for b in batch.values()])
            y = torch.cat([b[1] for b in batch.values()])
        else:
            x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        return {"logits": self(batch[0])}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(callback, train, *, accumulation=1, val=None, val_every=None, module=None, tmp_path=None,
        **trainer_kwargs):
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, callbacks=[callback], logger=False,
        enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=tmp_path is not None, default_root_dir=tmp_path,
        accumulate_grad_batches=accumulation, val_check_interval=val_every,
        num_sanity_val_steps=2 if val is not None else 0, **trainer_kwargs,
    )
    trainer.fit(module or Module(), train_dataloaders=train, val_dataloaders=val)
    return trainer


def loader(dataset, workers=0):
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=workers)


@pytest.mark.parametrize("accumulation", [1, 4])
def test_matches_hand_loop_with_validation(watch, tmp_path, accumulation):
    from prepwatch.integrations.lightning import PrepwatchCallback

    # Validation (slow) every 8 batches, sanity check and checkpoints on: none of it may
    # count as data wait or step time.
    # hand, framework, hand bracket the load; measured again (up to 3 times) while a
    # shared machine's load swings the shares apart (a real disagreement fails every round)
    for _attempt in range(3):
        hands = []
        for _ in range(2):
            before = figures(watch)
            hand_loop_images(watch, tiny_cnn(), ImageDataset(N, SLOW), batch_size=BATCH,
                             accumulation=accumulation)
            hands.append(delta(figures(watch), before))
            if len(hands) == 1:
                before = figures(watch)
                fit(PrepwatchCallback(), loader(ImageDataset(N, SLOW)), accumulation=accumulation,
                    val=loader(ImageDataset(32, 0.005, seed=1)), val_every=8, tmp_path=tmp_path)
                lit = delta(figures(watch), before)
        if share_agrees(lit, hands):
            break
    hand = hands[0]
    for key in ("steps", "samples", "waits", "periods", "first"):
        assert lit[key] == hand[key], (key, lit, hand)
    assert lit["steps"] == BATCHES and lit["samples"] == N
    assert_share_agrees(lit, hands)
    assert input_bound(lit) and all(input_bound(h) for h in hands)


def test_workers_and_multiple_loaders(watch):
    from prepwatch.integrations.lightning import PrepwatchCallback

    before = figures(watch)
    fit(PrepwatchCallback(), {"a": loader(ImageDataset(16), 2), "b": loader(ImageDataset(8, seed=2), 1)})
    got = delta(figures(watch), before)
    # max_size_cycle: 8 steps, each a batch from "a" and one from "b" (cycled)
    assert got["steps"] == 8 and got["samples"] == 8 * 2 * BATCH
    assert got["fetches"] >= 16 + 8  # both loaders' workers timed (b's cycled pass refetches)


def test_class_recall_excludes_sanity_check_and_inputs_recorded(watch):
    from helpers import scrape, value

    from prepwatch.integrations.lightning import PrepwatchCallback

    val = ImageDataset(24, seed=1)
    callback = PrepwatchCallback(class_recall=True, inputs=True)
    fit(callback, loader(ImageDataset(16)), val=loader(val), val_every=4)
    samples = scrape(watch.url)
    validations = 2  # every 4 of 8 batches; the 2-batch sanity check is not counted
    labels = val.y.tolist()
    for cls in (0, 1):
        got = value(samples, "prepwatch_class_samples_total", split="eval", **{"class": str(cls)})
        assert got == labels.count(cls) * validations
    assert watch.inputs().recorded_batches > 0
    contract = watch.inputs().contract()  # from the module's real input: 3x16x16 in [0, 1]
    assert (contract.channels, contract.height, contract.width) == (3, 16, 16)
    low, high = contract.support
    assert low.min() > -0.01 and high.max() < 1.01 and (high - low).min() > 0.9


def test_exception_in_a_step_leaves_no_state(watch):
    from prepwatch.integrations.lightning import PrepwatchCallback

    callback = PrepwatchCallback()
    with pytest.raises(RuntimeError, match="planted failure"):
        fit(callback, loader(ImageDataset(16)), module=Module(fail_at_step=3))
    assert math.isnan(watch.loop.first_wait_started_perf)
    before = figures(watch)
    fit(callback, loader(ImageDataset(N, SLOW)), val=loader(ImageDataset(16, 0.005)), val_every=8)
    run2 = delta(figures(watch), before)
    assert (run2["steps"], run2["samples"], run2["waits"], run2["periods"]) == \
        (BATCHES, N, BATCHES - 1, BATCHES - 1)
    assert watch.loop.excluded == 0.0
    assert 0.1 < run2["share"] <= 1.0, run2


class _Report(pl.Callback):
    """In each DDP rank: scrape that rank's own endpoint at the end of training."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        import json
        from pathlib import Path

        from helpers import scrape

        import prepwatch

        samples = scrape(prepwatch.current().url)
        found = {f"{name}|{dict(labels).get('rank')}": v for (name, labels), v in samples.items()
                 if name in ("prepwatch_steps_total", "prepwatch_samples_total",
                             "prepwatch_step_duration_seconds_count")}
        Path(self.out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(found))


@pytest.mark.slow
def test_ddp_spawn_on_cpu_gloo_ranks_from_trainer(tmp_path):
    import json

    from prepwatch.integrations.lightning import PrepwatchCallback

    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        callbacks=[PrepwatchCallback(run="ddp", port=0, sources=False), _Report(str(tmp_path))],
    )
    trainer.fit(Module(), train_dataloaders=loader(ImageDataset(32)))
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # each rank exports under its own rank label, from the Trainer (no RANK in the env)
        # and counts its own shard: 16 of the 32 samples, 8 batches of 2
        assert got == {f"prepwatch_steps_total|{rank}": 8.0, f"prepwatch_samples_total|{rank}": 16.0,
                       f"prepwatch_step_duration_seconds_count|{rank}": 7.0}, got
