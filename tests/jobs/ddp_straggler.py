"""One rank of a small synchronous DDP job (gloo, CPU) for the distributed e2e test.

Started by torchrun under `prepwatch run`. Cases (issue 15's table):
  healthy      every rank: collate instant, 50 ms of "accelerator" work per step
  allslow      every rank's collate sleeps 0.16 s
  slowcollate  rank 2's collate sleeps 0.18 s
  slowcompute  rank 2 does 0.17 s of extra work in its optimizer step
Work is sleeps, so four cases of three ranks fit on a 2-core machine.
"""

import argparse
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, TensorDataset, default_collate

import prepwatch

p = argparse.ArgumentParser()
p.add_argument("--case", required=True, choices=["healthy", "allslow", "slowcollate", "slowcompute"])
p.add_argument("--seconds", type=float, default=300)
args = p.parse_args()
torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
watch = prepwatch.start()
torch.manual_seed(0)
model = DDP(nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4)))
watch.ddp(model)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
collate_s = {"allslow": 0.16, "slowcollate": 0.18 if rank == 2 else 0.0}.get(args.case, 0.0)
extra_s = 0.17 if args.case == "slowcompute" and rank == 2 else 0.0


def collate(batch):
    if collate_s:
        time.sleep(collate_s)
    return default_collate(batch)


data = TensorDataset(torch.randn(1024, 32), torch.randint(0, 4, (1024,)))
loader = DataLoader(data, batch_size=16, shuffle=True, collate_fn=collate)
deadline = time.monotonic() + args.seconds
while time.monotonic() < deadline:
    for x, y in watch.loader(loader):
        time.sleep(0.05)  # the accelerator's share of the step, equal on every rank
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if extra_s:
            time.sleep(extra_s)  # e.g. a slower GPU or work only this rank does
        opt.step()
        if time.monotonic() > deadline:
            break
dist.destroy_process_group()
