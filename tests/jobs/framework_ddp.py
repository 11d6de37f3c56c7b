"""One rank of a 2-rank gloo job under torchrun, for tests/test_integration_ddp.py.

``--framework lightning|hf|accelerate`` trains a tiny model on CPU through the framework's
own DDP, in phases, one Watch for the whole process. After each phase the rank scrapes its
own endpoint and records the collective series and the integration's log lines; results go
to ``<out>/rank<N>.json`` as ``{phase: {...}}``. Phases (in this order, so the series is
absent until a phase times something):

* ``optout``: the integration with ``time_collectives=False``;
* ``auto``: the integration as users write it;
* ``user``: the user's own ``watch.ddp(model)`` as well (Lightning: in the module's
  ``on_fit_start``, after the callback's; Accelerate: before ``start()``);
* Accelerate only: ``foreign``/``builtin`` (a model with a Python / built-in comm hook of
  its own) and ``fsdp`` (an FSDP2 model in a 2-rank job): left alone, one info line each.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: helpers, frameworks

from frameworks import TokenDataset, tiny_bert  # noqa: E402
from helpers import scrape, value  # noqa: E402

import prepwatch  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--framework", required=True, choices=["lightning", "hf", "accelerate"])
p.add_argument("--out", required=True)
args = p.parse_args()
RANK = int(os.environ["RANK"])
STEPS = 4  # per rank and phase: 16 samples, 2 per rank and step
N, BATCH = 16, 2
START = {"run": "fwddp", "port": 0, "sources": False}


class Lines(logging.Handler):
    """The integration's log lines, per phase."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


lines = Lines()
logging.getLogger("prepwatch.integrations").addHandler(lines)
logging.getLogger("prepwatch.integrations").setLevel(logging.INFO)
results: dict = {}


def record(phase: str, **extra) -> None:
    samples = scrape(prepwatch.current().url)
    results[phase] = {
        "present": any(name.startswith("prepwatch_collective_wait_seconds") for name, _ in samples),
        "count": value(samples, "prepwatch_collective_wait_seconds_count") or 0.0,
        "bytes": value(samples, "prepwatch_collective_bytes_total") or 0.0,
        "steps": value(samples, "prepwatch_steps_total") or 0.0,
        "errors": value(samples, "prepwatch_internal_errors_total") or 0.0,
        "lines": list(lines.lines), **extra,
    }
    lines.lines.clear()


def param_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


# -- Lightning ----------------------------------------------------------------------------
def lightning() -> None:
    import pytorch_lightning as pl

    from prepwatch.integrations.lightning import PrepwatchCallback

    class Module(pl.LightningModule):
        def __init__(self, user_ddp: bool = False) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
            self.user_ddp = user_ddp
            self.user_timer = None

        def on_fit_start(self) -> None:  # after the callbacks' on_fit_start
            if self.user_ddp:
                self.user_timer = prepwatch.current().ddp(self.trainer.strategy.model)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(N, 8), torch.randint(0, 2, (N,)))

    def fit(callback, module):
        trainer = pl.Trainer(
            accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
            callbacks=[callback],
        )
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=BATCH))
        return trainer

    fit(PrepwatchCallback(time_collectives=False, **START), Module())
    record("optout")
    module = Module()
    trainer = fit(PrepwatchCallback(**START), module)
    record("auto", param_bytes=param_bytes(module), strategy=type(trainer.strategy).__name__)
    module = Module(user_ddp=True)
    fit(PrepwatchCallback(**START), module)
    record("user", user_timer=module.user_timer is not None)


# -- Hugging Face Trainer -------------------------------------------------------------------
def hf() -> None:
    from transformers import Trainer, TrainingArguments

    from prepwatch.integrations.huggingface import PrepwatchCallback

    def train(callback):
        targs = TrainingArguments(
            output_dir=os.path.join(args.out, "hf"), per_device_train_batch_size=BATCH,
            num_train_epochs=1, use_cpu=True, report_to=[], disable_tqdm=True, save_strategy="no",
            logging_strategy="no", seed=0, remove_unused_columns=False, ddp_backend="gloo",
        )
        model = tiny_bert()
        trainer = Trainer(model=model, args=targs, train_dataset=TokenDataset(N), callbacks=[callback])
        trainer.train()
        return trainer, model

    train(PrepwatchCallback(time_collectives=False, **START))
    record("optout")
    trainer, model = train(PrepwatchCallback(**START))
    record("auto", param_bytes=param_bytes(model), wrapper=type(trainer.model_wrapped).__name__)


# -- Accelerate -----------------------------------------------------------------------------
def accelerate() -> None:
    from accelerate import Accelerator
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    from prepwatch.integrations.accelerate import start

    accelerator = Accelerator(cpu=True)
    data = torch.utils.data.TensorDataset(torch.randn(N, 8), torch.randint(0, 2, (N,)))

    def prepared():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        dl = torch.utils.data.DataLoader(data, batch_size=BATCH)
        return accelerator.prepare(model, opt, dl)

    def train(watch, model, opt, dl):
        for x, y in watch.loader(dl):
            accelerator.backward(torch.nn.functional.cross_entropy(model(x), y))
            opt.step()
            opt.zero_grad()

    model, opt, dl = prepared()
    watch = start(accelerator, model=model, time_collectives=False, **START)
    train(watch, model, opt, dl)
    record("optout")

    model, opt, dl = prepared()
    watch = start(accelerator, model=model, **START)
    train(watch, model, opt, dl)
    record("auto", param_bytes=param_bytes(model), wrapper=type(model).__name__)

    model, opt, dl = prepared()
    user_timer = watch.ddp(model)  # the user's own line first
    again = start(accelerator, model=model, **START)
    train(again, model, opt, dl)
    record("user", same_watch=again is watch)

    model, opt, dl = prepared()
    model.register_comm_hook(None, allreduce_hook)  # the user's own Python hook
    start(accelerator, model=model, **START)
    train(watch, model, opt, dl)
    record("foreign", stale_entries=len(model._comm_hooks))

    model, opt, dl = prepared()
    model._register_builtin_comm_hook(torch.distributed.BuiltinCommHookType.ALLREDUCE)
    start(accelerator, model=model, **START)
    train(watch, model, opt, dl)
    record("builtin", stale_entries=len(model._comm_hooks))

    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    fsdp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    fully_shard(fsdp)
    start(accelerator, model=fsdp, **START)
    fsdp(torch.randn(2, 8)).sum().backward()
    record("fsdp", user_timer=user_timer is not None)


{"lightning": lightning, "hf": hf, "accelerate": accelerate}[args.framework]()
Path(args.out, f"rank{RANK}.json").write_text(json.dumps(results))
prepwatch.stop()
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
