"""`prepwatch demo --fault normalization`: a model served with the wrong preprocessing.

A small CNN is trained on synthetic photos with ImageNet-style normalization while
the input contract is recorded from the tensors it receives. Then it is
"deployed": first through the baked model (raw uint8 in, normalization inside,
guarded: clean), then through a server that makes one known mistake after another
(/255 forgotten, /255 twice, normalization skipped, [-1, 1], raw 0-255, BGR,
per-image standardization, uint8, NHWC, normalization twice), a few seconds each,
and from then on the most common one: normalization skipped, [0, 1] pixels served
to a model trained on mean/std-normalized input. Every served batch is checked by
the guard and fed to the model as a lenient server would, so the accuracy each
mistake costs is measured on the spot.

What shows: ``prepwatch_input_contract_violations_total{kind}`` climbing for each
kind in turn, then ``kind="range"`` on every batch; train and serve channel
statistics apart on the dashboard; ``PrepwatchInputOffContract`` firing. At the
end two summary lines.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from prepwatch.checks.inputs.faults import MISTAKES
from prepwatch.checks.inputs.monitor import Declared, NormalizedModel
from prepwatch.demo.normalization_scenes import accuracy, make_scenes, train_scene_model

SERVE_BATCH = 64
PACE_S = 0.05        # ~one served batch every 50 ms
TRAIN_SHARE = 0.25   # of args.seconds, at most TRAIN_MAX_S
TRAIN_MAX_S = 15.0
ORDER = ("forgot_255", "double_255", "served_0_1", "served_pm1", "served_0_255", "bgr",
         "per_image", "uint8", "nhwc", "double_normalize")
TOUR_SHARE = 0.4     # of the serving time spent touring every mistake, 2-6 s each
PERSISTENT = "served_0_1"


def main(watch: Any, args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    began = time.monotonic()
    declared = Declared.imagenet()
    inputs = watch.inputs(declared=declared, sample_every=2, seed=args.seed)
    raw, labels = make_scenes(3000, args.seed)
    budget = max(3.0, min(TRAIN_MAX_S, TRAIN_SHARE * args.seconds)) if args.seconds > 0 else 10
    model = train_scene_model(raw, labels, declared, seconds=budget, seed=args.seed,
                              on_batch=inputs.record, wrap=watch.loader)
    contract = inputs.contract()
    folder = Path(watch.artifacts_dir or tempfile.mkdtemp(prefix="prepwatch-norm-"))
    path = contract.save(folder / "scene_model.pt")
    inputs.use(contract)

    eval_raw, eval_labels = make_scenes(SERVE_BATCH * 16, args.seed + 1)
    baked = NormalizedModel(model, contract).eval()
    handle = inputs.attach(baked)
    with torch.no_grad():
        clean = accuracy(baked, eval_raw, eval_labels)
    handle.remove()

    start = time.monotonic()
    end = max(began + args.seconds, start + 10.0) if args.seconds > 0 else float("inf")
    serving = end - start if args.seconds > 0 else 60.0
    per_mistake = min(6.0, max(2.0, TOUR_SHARE * serving / len(ORDER)))
    found: dict[str, dict[str, Any]] = {}
    try:
        requests = watch.loader(_requests(end), batch_size=SERVE_BATCH)  # the served stream
        _serve(inputs, model, declared, eval_raw, eval_labels, start, requests, per_mistake,
               found)
    finally:
        print(f"normalization demo: contract {path}; clean accuracy {clean:.1%} "
              f"(baked model, raw uint8 in, guard clean)")
        parts = []
        for name, row in found.items():
            acc = row["hits"] / max(1, row["batches"] * SERVE_BATCH)
            kinds = ",".join(sorted(row["kinds"])) or "none"
            parts.append(f"{name} {acc:.0%} [{kinds} {row['flagged']}/{row['batches']}]")
        print("served with mistakes (accuracy [kinds flagged/batches]): " + "; ".join(parts))


def _requests(end: float) -> Iterator[int]:
    """Request numbers until ``end``, at once: the pace is kept by the server (below), so
    the loop never waits for input and the input-pipeline alerts stay out of this demo."""
    i = 0
    while time.monotonic() < end:
        yield i
        i += 1


def _serve(
    inputs: Any, model: torch.nn.Module, declared: Declared, eval_raw: torch.Tensor,
    eval_labels: torch.Tensor, start: float, requests: Iterable[int], per_mistake: float,
    found: dict[str, dict[str, Any]],
) -> None:
    for i in requests:
        slot = int((time.monotonic() - start) // per_mistake)
        name = ORDER[slot] if slot < len(ORDER) else PERSISTENT
        mistake = MISTAKES[name]
        idx = torch.randint(0, eval_raw.shape[0], (SERVE_BATCH,),
                            generator=torch.Generator().manual_seed(i))
        batch = mistake.make(eval_raw[idx], declared)
        result = inputs.guard(batch)
        with torch.no_grad():
            hits = int((model(mistake.model_input(batch)).argmax(1) == eval_labels[idx]).sum())
        row = found.setdefault(name, {"batches": 0, "flagged": 0, "hits": 0, "kinds": set()})
        row["batches"] += 1
        row["flagged"] += int(not result.ok)
        row["hits"] += hits
        row["kinds"].update(result.kinds)
        time.sleep(PACE_S)  # a steady request stream
