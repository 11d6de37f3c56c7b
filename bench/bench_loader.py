"""Hot-path cost of watch.loader(): wrapped vs bare, alternately, in one process.

    python bench/bench_loader.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from bench.common import alternate  # noqa: E402
from prepwatch.context import Context  # noqa: E402
from prepwatch.watch import Watch  # noqa: E402


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    watch = Watch(Context.create(), exporter=None, artifacts_dir=None)
    results = {}
    # 1. The hook alone: iterate ready-made batches (no loading), so only prepwatch's cost shows.
    batches = [(torch.zeros(64, 3, 32, 32), torch.zeros(64, dtype=torch.long))] * 2000
    wrapped_list = watch.loader(batches)
    results["hook_only"] = alternate(
        lambda: sum(1 for _ in batches), lambda: sum(1 for _ in wrapped_list), 10 if quick else 40
    )
    # 2. A real DataLoader over an in-memory dataset, batch 64 of 3x32x32 floats.
    data = TensorDataset(torch.randn(64 * 64, 3, 32, 32), torch.randint(0, 10, (64 * 64,)))
    for workers in (0, 2):
        dl = DataLoader(data, batch_size=64, num_workers=workers, persistent_workers=workers > 0)
        wrapped = watch.loader(dl)
        results[f"dataloader_workers{workers}"] = alternate(
            lambda dl=dl: sum(1 for _ in dl), lambda w=wrapped: sum(1 for _ in w),
            6 if quick else 30,
        )
    # The budget (issue: <= 3 us and <= 1% of a bare in-process batch) is judged on the hook
    # alone, which the paired DataLoader rows cannot resolve below their own noise.
    results["hook_only"]["share_of_bare_batch"] = (
        results["hook_only"]["overhead_us"] / results["dataloader_workers0"]["bare_us"]
    )
    return results


def table(results: dict) -> str:
    lines = [f"{'case':<24} {'bare us/batch':>14} {'wrapped':>10} {'overhead us':>12} {'ratio':>8}"]
    for name, r in results.items():
        lines.append(
            f"{name:<24} {r['bare_us']:>14.2f} {r['wrapped_us']:>10.2f} "
            f"{r['overhead_us']:>12.3f} {r['overhead_ratio']:>8.2%}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run("--quick" in sys.argv)))
