"""Series per run vs ranks, and the node agent's merge cost at 1, 8 and 16 local ranks.

One real rank is built (loop and worker timings from a DataLoader with workers, class
health with 1000 classes x 2 splits flushed, the collective timer of watch.ddp), its
snapshot is taken in the agent's wire format, and N ranks are simulated by serving that
snapshot under N identities, 8 ranks per node agent. Counted: sample lines a run exports
at 1, 8 and 64 ranks, with the class series merged per node (the agent's default) and per
rank (as before). Timed: the agent's merge and render of its local ranks' snapshots.

    python bench/bench_series.py
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

RANKS_PER_NODE = 8


class _Merged:
    def __init__(self, sources):
        self._sources = sources

    def collect(self):
        from prepwatch.exporter import snapshot

        return snapshot.merge(self._sources)


def _one_rank():
    import torch
    from datasets import TensorPairs
    from torch.utils.data import DataLoader

    from prepwatch.context import Context
    from prepwatch.exporter import snapshot
    from prepwatch.hooks.collective import CollectiveTimer
    from prepwatch.identity import Identity
    from prepwatch.watch import Watch

    torch.set_num_threads(1)
    ctx = Context.create(Identity(run="bench", rank=0))
    watch = Watch(ctx, exporter=None, artifacts_dir=None)
    for _ in watch.loader(DataLoader(TensorPairs(16), batch_size=2, num_workers=2)):
        pass
    CollectiveTimer(ctx).wait.observe(0.01)
    health = watch.class_health(num_classes=1000)
    for _ in range(20):
        health.train_predictions(torch.randint(0, 1000, (256,)), torch.randint(0, 1000, (256,)))
        with health.evaluation("eval"):
            health.eval_predictions(torch.randint(0, 1000, (256,)), torch.randint(0, 1000, (256,)))
    health.flush(60)
    payload = snapshot.encode(ctx.registry, {"run": "bench", "rank": 0})
    watch.stop()
    return payload


def _lines(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def _sources(payload: bytes, ranks: range):
    from prepwatch.exporter import snapshot

    return [({"run": "bench", "rank": str(r)}, snapshot.decode(payload)[1]) for r in ranks]


def run(quick: bool = False) -> dict:
    from prepwatch.agent.merge import collapse_class_series
    from prepwatch.exporter import snapshot
    from prepwatch.exporter.text import encode_text

    payload = _one_rank()
    _, metrics = snapshot.decode(payload)
    body = encode_text(_Merged([({"run": "bench", "rank": "0"}, metrics)]))
    per_family: Counter[str] = Counter()
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            per_family[line.split("{", 1)[0].split(" ", 1)[0]] += 1
    results: dict = {"series_per_rank": _lines(body)}
    for ranks in (1, 8, 64):
        merged = per_rank = 0
        for node in range(0, ranks, RANKS_PER_NODE):
            sources = _sources(payload, range(node, min(ranks, node + RANKS_PER_NODE)))
            per_rank += _lines(encode_text(_Merged(sources)))
            merged += _lines(encode_text(_Merged(collapse_class_series(sources))))
        results[f"series_per_run_{ranks}_ranks"] = {"class_series_per_node": merged,
                                                    "class_series_per_rank": per_rank}
    n = 3 if quick else 7
    for local in (1, 8, 16):
        sources = _sources(payload, range(local))
        timings = {}
        for mode, fn in (("merged_per_node", lambda s=sources: _Merged(collapse_class_series(s))),
                         ("per_rank", lambda s=sources: _Merged(s))):
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                encode_text(fn())
                times.append(time.perf_counter() - t0)
            timings[f"{mode}_ms"] = statistics.median(times) * 1e3
        results[f"agent_merge_render_{local}_local_ranks"] = timings
    results["per_family"] = dict(sorted(per_family.items(), key=lambda kv: -kv[1]))
    return results


if __name__ == "__main__":
    import json

    print(json.dumps(run("--quick" in sys.argv), indent=2))
