"""The demo's training job (a child of the demo's agent). `python -m prepwatch.demo.job`."""

from __future__ import annotations

import argparse
import importlib
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

import prepwatch
from prepwatch.demo import EXTRAS, FAULTS
from prepwatch.demo.data import SyntheticShapes
from prepwatch.demo.model import small_cnn

log = logging.getLogger("prepwatch.demo")
EVAL_EVERY_S = 5.0
# --fault starvation: per-sample storage wait + CPU decode in the workers; a batch of 64
# then takes ~0.5 s per worker, several times the model step: the loop waits for data.
STARVED_READ_S = 0.004
STARVED_DECODE_S = 0.003


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m prepwatch.demo.job")
    p.add_argument("--seconds", type=float, default=60.0, help="0 = until interrupted")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--fault", choices=FAULTS, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    return p.parse_args(argv)


def load_extras(watch: prepwatch.Watch, args: argparse.Namespace) -> list[Any]:
    """Every capability's demo extra that this build has (modules prepwatch.demo.extra_*)."""
    extras = []
    for name in EXTRAS:
        module_name = f"prepwatch.demo.extra_{name}"
        try:
            module = importlib.import_module(module_name)
            extras.append(module.Extra(watch, args))
        except ImportError as exc:
            if exc.name != module_name:
                watch.ctx.errors.report("demo", exc)
        except Exception as exc:
            watch.ctx.errors.report("demo", exc)
    return extras


def _call(watch: prepwatch.Watch, extras: list[Any], method: str, *a: Any) -> None:
    for extra in extras:
        try:
            getattr(extra, method)(*a)
        except Exception as exc:
            watch.ctx.errors.report("demo", exc)


def train(watch: prepwatch.Watch, args: argparse.Namespace) -> int:
    """The healthy job (and the starved one): train, evaluate every few seconds."""
    torch.manual_seed(args.seed)
    starved = args.fault == "starvation"
    shards = Path(tempfile.mkdtemp(prefix="prepwatch-demo-"))
    train_set = SyntheticShapes(
        4096, seed=args.seed, augment=True,
        slow_read_s=STARVED_READ_S if starved else 0.0,
        slow_decode_s=STARVED_DECODE_S if starved else 0.0,
        shard_dir=shards,
    )
    eval_set = SyntheticShapes(256, seed=args.seed + 1, augment=False)
    loader = DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
        persistent_workers=args.workers > 0, drop_last=True,
    )
    eval_loader = DataLoader(eval_set, batch_size=128)
    model = small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    extras = load_extras(watch, args)
    deadline = time.monotonic() + args.seconds if args.seconds > 0 else float("inf")
    last_eval = time.monotonic()
    step = 0
    try:
        while time.monotonic() < deadline:
            for images, labels in watch.loader(loader):
                model.train()
                logits = model(images)
                loss = loss_fn(logits, labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                _call(watch, extras, "on_train_step", step, images, labels, logits.detach())
                step += 1
                if time.monotonic() >= deadline:
                    break
            # Evaluate between passes, as real jobs do: the pause is then not a training step
            # (the first batch of a pass is timed apart), so it cannot skew step-time spread.
            if time.monotonic() - last_eval >= EVAL_EVERY_S or time.monotonic() >= deadline:
                model.eval()
                with torch.no_grad():
                    for eval_images, eval_labels in eval_loader:
                        eval_logits = model(eval_images)
                        _call(watch, extras, "on_eval", eval_images, eval_labels, eval_logits)
                last_eval = time.monotonic()
    except KeyboardInterrupt:
        return 130
    finally:
        _call(watch, extras, "close")
        shutil.rmtree(shards, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)
    watch = prepwatch.start(run="demo")
    if args.fault not in (None, "starvation"):
        module_name = f"prepwatch.demo.fault_{args.fault}"
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if exc.name != module_name:
                raise
            print(f"prepwatch demo: fault {args.fault!r} is not in this build", file=sys.stderr)
            return 2
        try:
            module.main(watch, args)
        except KeyboardInterrupt:
            return 130
        return 0
    return train(watch, args)


if __name__ == "__main__":
    sys.exit(main())
