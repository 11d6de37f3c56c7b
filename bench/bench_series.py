"""Series per run vs ranks, and the node agent's merge cost at 1, 8 and 16 local ranks.

One real rank is built (loop and worker timings from a DataLoader with workers, class
health with 1000 classes x 2 splits flushed, the collective timer of watch.ddp), its
registry is rendered in the agent's wire format under N identities to simulate N ranks, 8
ranks per node agent. Counted: sample lines a run exports at 1, 8 and 64 ranks, with the
class series merged per node (the agent's default) and per rank (as before). Timed, at 1,
8 and 16 local ranks: the agent's work per scrape (check every snapshot, merge the class
series, assemble the text), against a direct scrape's render of one rank; "cold" with every
block new to the agent, "training" with what changes between two scrapes of a training job
changed (loop timings, a collective, class health's training split: it flushes every 10 s)
and the evaluation split not (the agent does not re-check a block identical to the one it
accepted last time).

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


def _one_rank():
    import torch
    from datasets import TensorPairs
    from torch.utils.data import DataLoader

    from prepwatch.context import Context
    from prepwatch.hooks.collective import CollectiveTimer
    from prepwatch.identity import Identity
    from prepwatch.watch import Watch

    torch.set_num_threads(1)
    ctx = Context.create(Identity(run="bench", rank=0))
    watch = Watch(ctx, exporter=None, artifacts_dir=None)
    for _ in watch.loader(DataLoader(TensorPairs(16), batch_size=2, num_workers=2)):
        pass
    timer = CollectiveTimer(ctx)
    timer.wait.observe(0.01)
    steps = watch.loader(DataLoader(TensorPairs(16), batch_size=2, num_workers=0))
    health = watch.class_health(num_classes=1000)

    def between_scrapes() -> None:  # training: loop timings, and class health's training split
        for _ in steps:
            timer.wait.observe(0.01)
        health.train_predictions(torch.randint(0, 1000, (256,)), torch.randint(0, 1000, (256,)))
        health.flush(60)
    for _ in range(20):
        health.train_predictions(torch.randint(0, 1000, (256,)), torch.randint(0, 1000, (256,)))
        with health.evaluation("eval"):
            health.eval_predictions(torch.randint(0, 1000, (256,)), torch.randint(0, 1000, (256,)))
    health.flush(60)
    return ctx.registry, between_scrapes, watch.stop


def _lines(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def _payloads(registry, ranks: range) -> list[bytes]:
    from prepwatch.exporter import snapshot

    return [snapshot.encode(registry, {"run": "bench", "rank": r}) for r in ranks]


def _agent_body(payloads: list[bytes], merge: bool = True, checkers=None, merger=None) -> bytes:
    """What the agent does per scrape once the ranks' snapshots arrived; ``checkers`` and
    ``merger`` carry what it remembers of the last scrape (new ones: nothing)."""
    from prepwatch.agent import exposition, snapshot_validation
    from prepwatch.agent.merge import ClassMerger

    checkers = checkers or [snapshot_validation.SnapshotChecker() for _ in payloads]
    sources = [checker.decode([p]) for checker, p in zip(checkers, payloads)]
    merged = (merger or ClassMerger()).collapse(sources) if merge else sources
    return exposition.render(exposition.assemble(merged, []))


def _median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def run(quick: bool = False) -> dict:
    from prepwatch.agent.merge import ClassMerger
    from prepwatch.agent.snapshot_validation import SnapshotChecker
    from prepwatch.exporter.text import encode_text

    registry, between_scrapes, stop = _one_rank()
    body = _agent_body(_payloads(registry, range(1)), merge=False)
    per_family: Counter[str] = Counter()
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            per_family[line.split("{", 1)[0].split(" ", 1)[0]] += 1
    results: dict = {"series_per_rank": _lines(body)}
    for ranks in (1, 8, 64):
        merged = per_rank = 0
        for node in range(0, ranks, RANKS_PER_NODE):
            payloads = _payloads(registry, range(node, min(ranks, node + RANKS_PER_NODE)))
            per_rank += _lines(_agent_body(payloads, merge=False))
            merged += _lines(_agent_body(payloads))
        results[f"series_per_run_{ranks}_ranks"] = {"class_series_per_node": merged,
                                                    "class_series_per_rank": per_rank}
    n = 3 if quick else 7
    direct = _median_ms(lambda: encode_text(registry, {"run": "bench", "rank": "0"}), n)
    results["direct_render_one_rank_ms"] = direct
    for local in (1, 8, 16):
        payloads = _payloads(registry, range(local))
        cold = _median_ms(lambda p=payloads: _agent_body(p), n)
        checkers, merger = [SnapshotChecker() for _ in range(local)], ClassMerger()
        _agent_body(payloads, checkers=checkers, merger=merger)
        times = []
        for _ in range(n):
            between_scrapes()
            payloads = _payloads(registry, range(local))
            t0 = time.perf_counter()
            _agent_body(payloads, checkers=checkers, merger=merger)
            times.append(time.perf_counter() - t0)
        training = statistics.median(times) * 1e3
        results[f"agent_{local}_local_ranks"] = {
            "cold_ms": cold, "training_ms": training, "training_per_rank_ms": training / local,
            "cold_vs_direct_one_rank": cold / direct, "training_vs_direct_one_rank": training / direct,
        }
    stop()
    results["per_family"] = dict(sorted(per_family.items(), key=lambda kv: -kv[1]))
    return results


if __name__ == "__main__":
    import json

    print(json.dumps(run("--quick" in sys.argv), indent=2))
