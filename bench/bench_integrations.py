"""Per-step cost of each framework integration: the framework with vs without it.

    python bench/bench_integrations.py [--quick]

Each round trains a tiny model (1-layer BERT for Hugging Face and Accelerate, a small MLP
for Lightning) on in-memory data for a fixed number of steps, once with the integration
and once without, alternating; a clock inside the run (train begin to train end) leaves
the Trainer's set-up out. Overhead is the median paired difference per step.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import prepwatch  # noqa: E402

BATCH, STEPS = 8, 64


def _tokens() -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(5, 100, (BATCH * STEPS, 16), generator=g)
    return [{"input_ids": x[i], "attention_mask": torch.ones(16, dtype=torch.long),
             "labels": int(x[i, 0] % 2)} for i in range(len(x))]


def _bert() -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=2))


def huggingface(with_integration: bool, out: str, accumulation: int = 1) -> float:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from prepwatch.integrations.huggingface import PrepwatchCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.t0 = time.perf_counter()

        def on_train_end(self, *a: Any, **k: Any) -> None:
            self.t1 = time.perf_counter()

    clock = Clock()
    callbacks: list[Any] = [clock] + ([PrepwatchCallback()] if with_integration else [])
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=BATCH, num_train_epochs=1,
                             gradient_accumulation_steps=accumulation, use_cpu=True, report_to=[],
                             disable_tqdm=True, save_strategy="no", logging_strategy="no",
                             remove_unused_columns=False)
    Trainer(model=_bert(), args=args, train_dataset=_tokens(), callbacks=callbacks).train()
    return (clock.t1 - clock.t0) / STEPS


def lightning(with_integration: bool, out: str) -> float:
    import pytorch_lightning as pl

    from prepwatch.integrations.lightning import PrepwatchCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Clock(pl.Callback):
        def on_train_start(self, *a: Any) -> None:
            self.t0 = time.perf_counter()

        def on_train_end(self, *a: Any) -> None:
            self.t1 = time.perf_counter()

    n = BATCH * STEPS
    data = torch.utils.data.TensorDataset(torch.randn(n, 32), torch.randint(0, 2, (n,)))
    clock = Clock()
    callbacks: list[Any] = [clock] + ([PrepwatchCallback()] if with_integration else [])
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, callbacks=callbacks, logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=out)
    trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=BATCH))
    return (clock.t1 - clock.t0) / STEPS


def accelerate(with_integration: bool, out: str) -> float:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = _bert()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    dl = torch.utils.data.DataLoader(_tokens(), batch_size=BATCH)
    model, opt, dl = accelerator.prepare(model, opt, dl)
    loader = prepwatch.current().loader(dl) if with_integration else dl  # type: ignore[union-attr]
    t0 = time.perf_counter()
    for batch in loader:
        with accelerator.accumulate(model):
            accelerator.backward(model(**batch).loss)
            opt.step()
            opt.zero_grad()
    return (time.perf_counter() - t0) / STEPS


def mechanisms(quick: bool) -> dict[str, dict[str, float]]:
    """Each integration's per-batch path alone, over ready-made batches (as bench_loader's
    hook_only): the framework runs above cannot resolve microseconds on a shared VM."""
    from bench.common import alternate
    from prepwatch.integrations._core import StepMarks
    from prepwatch.integrations._grouped import GroupedLoader
    from prepwatch.integrations.lightning import _MarkedLoader

    watch = prepwatch.current()
    assert watch is not None
    batches = [(torch.zeros(8, 16), torch.zeros(8, dtype=torch.long))] * 2000
    marks = StepMarks(watch)

    def marked_steps(it: Any) -> int:
        n = 0
        for _ in it:
            marks.step_end()  # the callback's on_step_end / on_train_batch_end
            n += 1
        return n

    hf1 = GroupedLoader(batches, watch.loop, watch.worker_stats, watch.ctx.errors, group=1)
    hf4 = GroupedLoader(batches, watch.loop, watch.worker_stats, watch.ctx.errors, group=4)
    light = _MarkedLoader(batches, watch.loop, watch.worker_stats, watch.ctx.errors, marks=marks)
    rounds = 10 if quick else 40
    plain = watch.loader(batches)
    return {
        "watch_loader_reference": alternate(lambda: sum(1 for _ in batches), lambda: sum(1 for _ in plain),
                                            rounds),
        "hf_path_accum1": alternate(lambda: sum(1 for _ in batches),
                                    lambda: marked_steps(hf1._generate(marks.wrap(iter(batches)))), rounds),
        "hf_path_accum4": alternate(lambda: sum(1 for _ in batches),
                                    lambda: marked_steps(hf4._generate(marks.wrap(iter(batches)))), rounds),
        "lightning_path": alternate(lambda: sum(1 for _ in batches), lambda: marked_steps(light), rounds),
    }


def paired(fn: Callable[[bool, str], float], rounds: int, out: str) -> dict[str, float]:
    fn(False, out), fn(True, out)  # warm-up: imports, allocator
    bare, wrapped, diffs = [], [], []
    for i in range(rounds):
        order = (False, True) if i % 2 == 0 else (True, False)
        got = {flag: fn(flag, out) for flag in order}
        bare.append(got[False])
        wrapped.append(got[True])
        diffs.append(got[True] - got[False])
    b = statistics.median(bare)
    d = statistics.median(diffs)
    return {"bare_us": b * 1e6, "wrapped_us": statistics.median(wrapped) * 1e6,
            "overhead_us": d * 1e6, "overhead_ratio": d / b, "rounds": rounds}


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # the frameworks' own deprecation chatter
    import logging

    for name in ("pytorch_lightning", "lightning", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    prepwatch.stop()
    prepwatch.start(run="bench-integrations", port=0, sources=False)
    rounds = 4 if quick else 8
    out = tempfile.mkdtemp(prefix="prepwatch-bench-")
    try:
        return {
            **mechanisms(quick),
            "huggingface_trainer": paired(huggingface, rounds, out),
            "huggingface_trainer_accum4": paired(
                lambda flag, o: huggingface(flag, o, accumulation=4), rounds, out),
            "lightning_trainer": paired(lightning, rounds, out),
            "accelerate_loop": paired(accelerate, rounds, out),
        }
    finally:
        prepwatch.stop()


def table(results: dict) -> str:
    lines = [f"{'case':<28} {'bare us/step':>13} {'with':>10} {'overhead us':>12} {'ratio':>8}"]
    for name, r in results.items():
        # the per-batch paths iterate a ready-made list: no bare step to take a ratio of
        ratio = f"{r['overhead_ratio']:>8.2%}" if r["bare_us"] > 100 else f"{'-':>8}"
        lines.append(f"{name:<28} {r['bare_us']:>13.1f} {r['wrapped_us']:>10.1f} "
                     f"{r['overhead_us']:>12.2f} {ratio}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run("--quick" in sys.argv)))
