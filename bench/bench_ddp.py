"""Cost of watch.ddp(): DDP steps with the timing comm hook vs plain DDP, alternately.

Gloo ranks on CPU (spawned here), each holding a plain DDP model and a timed one of the
same architecture; rounds alternate between them in lockstep (the collectives of all
ranks line up), and the paired per-step difference is reported. Two worlds: 2 ranks (a
real all-reduce, whose jitter on a shared machine is larger than the hook) and 1 rank
(the all-reduce is nearly free, so the difference is the hook's own Python cost per
step: the upper end of its overhead). The model is small (4 buckets per step). A third
arm registers torch's own Python ``allreduce_hook`` (untimed): the cost any Python comm
hook pays over DDP's built-in C++ reduction, for comparison.

    python bench/bench_ddp.py
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))



def _rank(rank: int, world: int, port: int, out: str, rounds: int, steps: int) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    from prepwatch.context import Context
    from prepwatch.watch import Watch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    watch = Watch(Context.create(), exporter=None, artifacts_dir=None)

    def make() -> DDP:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                            nn.Linear(512, 10))
        return DDP(net, bucket_cap_mb=0.5)  # ~1.4 MB of gradients: 4 buckets per step

    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    plain, timed, python_hook = make(), make(), make()
    watch.ddp(timed)
    python_hook.register_comm_hook(None, allreduce_hook)  # any Python hook, untimed
    x, y = torch.randn(32, 256), torch.randint(0, 10, (32,))

    def go(model: DDP) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            model.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
        return (time.perf_counter() - t0) / steps

    arms = {"plain": plain, "timed": timed, "python_hook": python_hook}
    for model in arms.values():
        go(model)  # warm-up (bucket rebuild on the first iterations)
    times: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for i in range(rounds):
        order = names[i % 3:] + names[: i % 3]  # rotate, so drift hits every arm alike
        for name in order:
            times[name].append(go(arms[name]))
    if rank == 0:
        bare = statistics.median(times["plain"])

        def paired(name: str) -> float:
            return statistics.median(a - b for a, b in zip(times[name], times["plain"]))

        Path(out).write_text(json.dumps({
            "bare_step_us": bare * 1e6, "timed_step_us": statistics.median(times["timed"]) * 1e6,
            "overhead_us": paired("timed") * 1e6, "overhead_ratio": paired("timed") / bare,
            "torch_python_allreduce_hook_overhead_us": paired("python_hook") * 1e6,
            "buckets_per_step": 4, "world_size": world, "rounds": rounds, "steps_per_round": steps,
        }))
    dist.destroy_process_group()


def run(quick: bool = False) -> dict:
    import torch.multiprocessing as mp

    results = {}
    for world in (2, 1):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "ddp.json")
            mp.spawn(_rank, args=(world, port, out, 6 if quick else 30, 20), nprocs=world, join=True)
            results[f"world{world}"] = json.loads(Path(out).read_text())
    return results


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
