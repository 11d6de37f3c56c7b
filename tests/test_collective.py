"""watch.ddp(): collective wait per rank on real gloo ranks, gradients unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import free_port

JOB = Path(__file__).parent / "jobs" / "ddp_grads.py"
ROOT = Path(__file__).resolve().parents[1]
WORLD = 3


def _run_ranks(out: Path, slow_s: float) -> list[dict]:
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE=str(WORLD), OMP_NUM_THREADS="1",
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    procs = [
        subprocess.Popen([sys.executable, str(JOB), "--out", str(out), "--slow-s", str(slow_s)],
                         env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stderr=subprocess.PIPE, text=True)
        for r in range(WORLD)
    ]
    errors = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            errors.append(err[-3000:])
    assert not errors, "\n".join(errors)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.mark.slow
def test_gradients_unchanged_and_the_rank_that_waits_least_is_the_straggler(tmp_path):
    results = _run_ranks(tmp_path, slow_s=0.2)
    for r, res in enumerate(results):
        assert res["same"], f"rank {r}: parameters differ from plain DDP"
        assert res["steps"] == 6, res  # one observation per synchronized backward
        assert res["bytes"] > 0
        assert res["slow_steps"] == 6
    # informative: torch's own allreduce_hook divides instead of multiplying by 1/world
    print("allreduce_hook bit-identical to plain DDP per rank:", [r["div_same"] for r in results])
    waits = [res["slow_mean_wait"] for res in results]
    print("mean collective wait per rank with rank 2 slow:", waits)
    # ranks 0 and 1 sit in the all-reduce while rank 2 sleeps 0.2 s after its backward
    assert waits[0] > 0.1 and waits[1] > 0.1, waits
    # relative, not absolute: a stall on a fast rank (2 cores, 3 ranks) makes rank 2 wait too
    assert waits[2] < 0.5 * min(waits[0], waits[1]), waits


def test_ddp_refuses_a_model_that_is_not_ddp(watch):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="DistributedDataParallel"):
        watch.ddp(torch.nn.Linear(2, 2))


@pytest.fixture
def one_rank_group():
    torch = pytest.importorskip("torch")
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield torch
    dist.destroy_process_group()


def test_one_rank_in_process_counts_each_backward_and_its_bytes(watch, one_rank_group):
    torch = one_rank_group
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(torch.nn.Linear(8, 4))
    timer = watch.ddp(model)
    for _ in range(3):
        model(torch.randn(2, 8)).sum().backward()
    assert sum(timer.wait.counts) == 3
    assert timer.bytes.value == 3 * (8 * 4 + 4) * 4  # float32 weight and bias, every step


def test_a_second_comm_hook_is_a_clear_error(watch, one_rank_group):
    torch = one_rank_group
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(torch.nn.Linear(2, 2))
    model.register_comm_hook(None, allreduce_hook)
    with pytest.raises(RuntimeError, match=r"hook=your_hook"):
        watch.ddp(model)
    other = DDP(torch.nn.Linear(2, 2))
    timer = watch.ddp(other, hook=allreduce_hook, state=None)  # the user's hook, timed
    other(torch.randn(3, 2)).sum().backward()
    assert sum(timer.wait.counts) == 1
