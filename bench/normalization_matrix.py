"""Detection and false alarms of the input guard on real photos: every mistake x batch size.

    python -m bench.normalization_matrix            # full: sizes 8-256 (~minutes)
    python -m bench.normalization_matrix --quick    # sizes 8, 32 (the tests' reduced grid)

For each image variant (bench/real_images.py: colour photos, narrow noisy channels, grey)
and each training convention (ImageNet mean/std, [0, 1], [-1, 1]) a contract is recorded
from 4,096 training patches; then held-out patches are served correctly and with each
mistake in ``prepwatch.checks.inputs.MISTAKES``, in batches of each size. Printed as
markdown tables (docs/inputs.md): per mistake and size, the share of batches whose
violations include the expected kind; and the share of correct batches flagged.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from bench.real_images import VARIANTS, patches
from prepwatch.checks.inputs import MISTAKES, Declared, InputMonitor, correct
from prepwatch.context import Context

SIZES = (8, 16, 32, 64, 128, 256)
CONVENTIONS = {"imagenet": Declared.imagenet(), "unit": Declared.unit(), "pm1": Declared.symmetric()}


def contract_for(variant: str, declared: Declared, train_images: int = 4096, seed: int = 0) -> Any:
    raw = patches(variant, train_images, seed)
    mon = InputMonitor(Context.create(), declared=declared, sample_every=1, images_per_sample=64)
    for i in range(0, raw.shape[0], 64):
        mon.record(correct(raw[i:i + 64], declared))
        mon.flush()
    contract = mon.contract()
    mon.close()
    return contract


def matrix(variant: str, convention: str, sizes=SIZES, batches: int = 20, seed: int = 1) -> dict:
    declared = CONVENTIONS[convention]
    guard = InputMonitor(Context.create(), contract=contract_for(variant, declared))
    held_out = patches(variant, max(sizes) * batches, seed + 1000)
    detect: dict[tuple[str, int], float] = {}
    false_alarm: dict[int, float] = {}
    for n in sizes:
        chunks = [held_out[i * n:(i + 1) * n] for i in range(batches)]
        false_alarm[n] = sum(not guard.guard(correct(b, declared)).ok for b in chunks) / batches
        for name, mistake in MISTAKES.items():
            kind = mistake.expected_kind(declared)
            if kind is None or torch.equal(mistake.make(chunks[0], declared), correct(chunks[0], declared)):
                continue  # no mistake here (BGR of grey photos is the same tensor)
            named = sum(kind in guard.guard(mistake.make(b, declared)).kinds for b in chunks)
            detect[(name, n)] = named / batches
    guard.close()
    return {"detect": detect, "false_alarm": false_alarm, "sizes": sizes, "batches": batches}


def table(variant: str, convention: str, result: dict) -> str:
    sizes = result["sizes"]
    lines = [f"**{variant}, {convention}** ({result['batches']} batches per cell: share named)", "",
             "| mistake | " + " | ".join(str(n) for n in sizes) + " |",
             "|" + " --- |" * (len(sizes) + 1)]
    for name in MISTAKES:
        if (name, sizes[0]) in result["detect"]:
            cells = [f"{result['detect'][(name, n)]:.2f}" for n in sizes]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = [f"{result['false_alarm'][n]:.2f}" for n in sizes]
    lines.append("| *correct: false alarms* | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sizes = (8, 32) if args.quick else SIZES
    for variant in VARIANTS:
        for convention in CONVENTIONS:
            print(table(variant, convention, matrix(variant, convention, sizes)))
            print()


if __name__ == "__main__":
    main()
