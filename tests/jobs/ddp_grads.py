"""One rank of a gloo DDP job for tests/test_collective.py (started 3 times by the test).

Part 1: the same model, data and seed trained with plain DDP and with ``watch.ddp``;
parameters are compared bit for bit. Part 2: rank ``--slow-rank`` does extra work after
backward (like a slow optimizer step); every rank writes its mean collective wait.
Results go to ``<out>/rank<N>.json``.
"""

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel as DDP

import prepwatch

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--steps", type=int, default=6)
p.add_argument("--slow-rank", type=int, default=2)
p.add_argument("--slow-s", type=float, default=0.15)
args = p.parse_args()
torch.set_num_threads(1)
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))


def train(ddp: DDP, steps: int, slow: float = 0.0) -> None:
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(100 + rank)
    for _ in range(steps):
        x, y = torch.randn(16, 32, generator=g), torch.randint(0, 5, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(ddp(x), y).backward()
        if slow:
            time.sleep(slow)
        opt.step()


watch = prepwatch.start(run="ddp-grads", port=0, sources=False)
# tiny buckets: several all-reduces per backward, as in a real model
plain = DDP(model(), bucket_cap_mb=0.005)
train(plain, args.steps)
timed = DDP(model(), bucket_cap_mb=0.005)
timer = watch.ddp(timed)
train(timed, args.steps)
same = all(torch.equal(a, b) for a, b in zip(plain.parameters(), timed.parameters()))
synced_steps = timer.wait.counts and sum(timer.wait.counts)
divided = DDP(model(), bucket_cap_mb=0.005)  # torch's allreduce_hook: divides, then sums
divided.register_comm_hook(None, allreduce_hook)
train(divided, args.steps)
div_same = all(torch.equal(a, b) for a, b in zip(plain.parameters(), divided.parameters()))
first = {"same": same, "div_same": div_same, "steps": synced_steps, "bytes": timer.bytes.value}

before_n, before_s = sum(timer.wait.counts), timer.wait.sum
train(timed, args.steps, slow=args.slow_s if rank == args.slow_rank else 0.0)
dist.barrier()
n, s = sum(timer.wait.counts) - before_n, timer.wait.sum - before_s
first["slow_mean_wait"] = s / max(n, 1)
first["slow_steps"] = n
with open(os.path.join(args.out, f"rank{rank}.json"), "w") as fh:
    json.dump(first, fh)
dist.destroy_process_group()
prepwatch.stop()
