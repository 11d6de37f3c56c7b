"""The loader hook's cost per batch in two source trees, alternating, in one run.

Used to show a refactor left the hot path within noise:

    python bench/bench_hook_compare.py /path/to/old/checkout .

Each round runs one fresh process per tree (so imports and allocator state do not leak
between them) that times ready-made batches bare and wrapped, best of 15 passes of 20,000
batches; the figure is the median over rounds of (wrapped - bare) per batch.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

CHILD = r"""
import sys, time, torch
sys.path.insert(0, sys.argv[1])
from prepwatch.context import Context
from prepwatch.watch import Watch
torch.set_num_threads(1)
watch = Watch(Context.create(), exporter=None, artifacts_dir=None)
batches = [(torch.zeros(64, 3, 32, 32), torch.zeros(64, dtype=torch.long))] * 20000
wrapped = watch.loader(batches)
best_bare = best_wrapped = float("inf")
clock = time.perf_counter
for _ in range(15):
    t = clock(); sum(1 for _ in batches); best_bare = min(best_bare, clock() - t)
    t = clock(); sum(1 for _ in wrapped); best_wrapped = min(best_wrapped, clock() - t)
print((best_wrapped - best_bare) / len(batches) * 1e6)
"""


def main(trees: list[str], rounds: int = 5) -> dict[str, float]:
    results: dict[str, list[float]] = {tree: [] for tree in trees}
    for _ in range(rounds):
        for tree in trees:
            out = subprocess.run([sys.executable, "-c", CHILD, tree], capture_output=True,
                                 text=True, check=True)
            results[tree].append(float(out.stdout.strip().splitlines()[-1]))
    medians = {tree: statistics.median(v) for tree, v in results.items()}
    for tree, v in results.items():
        print(f"{tree}: {medians[tree]:.2f} us per batch (rounds: {', '.join(f'{x:.2f}' for x in v)})")
    return medians


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python bench/bench_hook_compare.py OLD_TREE NEW_TREE")
    main(sys.argv[1:])
