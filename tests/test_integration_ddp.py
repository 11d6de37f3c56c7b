"""The integrations time the DDP all-reduce themselves: real 2-rank gloo jobs under torchrun.

Each framework test starts ``tests/jobs/framework_ddp.py`` under torchrun (2 ranks, CPU)
and reads what every rank scraped from its own endpoint after each phase: the collective
series absent with ``time_collectives=False``, one observation per synchronized backward
by default, still one hook and one count when the user also calls ``watch.ddp``, and models
prepwatch must not touch (another comm hook, FSDP) left alone with one info line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).parent / "jobs" / "framework_ddp.py"
ROOT = Path(__file__).resolve().parents[1]
WORLD, STEPS = 2, 4  # tests/jobs/framework_ddp.py: 16 samples, 2 per rank and step

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def _torchrun(framework: str, out: Path) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         str(WORLD), str(JOB), "--framework", framework, "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def _timed(phase: dict, before: dict | None, param_bytes: int) -> None:
    """``phase`` timed every synchronized backward once, with one hook's bytes."""
    count = phase["count"] - (before["count"] if before else 0.0)
    sent = phase["bytes"] - (before["bytes"] if before else 0.0)
    assert phase["present"]
    assert count == STEPS, phase
    assert sent == STEPS * param_bytes, phase  # one hook: every gradient byte once per step


def _opted_out(phase: dict) -> None:
    assert not phase["present"], phase
    assert phase["steps"] == STEPS  # the run itself was monitored


@pytest.mark.slow
def test_lightning_ddp_times_the_all_reduce_on_every_rank(tmp_path):
    pytest.importorskip("pytorch_lightning")
    for rank, res in enumerate(_torchrun("lightning", tmp_path)):
        _opted_out(res["optout"])
        assert res["auto"]["strategy"] == "DDPStrategy"
        _timed(res["auto"], None, res["auto"]["param_bytes"])
        assert any("timing Lightning's DDP" in line for line in res["auto"]["lines"]), res["auto"]
        # the module's own watch.ddp(trainer.strategy.model) after the callback's: same hook
        assert res["user"]["user_timer"]
        _timed(res["user"], res["auto"], res["auto"]["param_bytes"])
        assert all(res[p]["errors"] == 0 for p in res), (rank, res)


@pytest.mark.slow
def test_huggingface_trainer_ddp_times_the_all_reduce_on_every_rank(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    for rank, res in enumerate(_torchrun("hf", tmp_path)):
        _opted_out(res["optout"])
        assert res["auto"]["wrapper"] == "DistributedDataParallel"
        _timed(res["auto"], None, res["auto"]["param_bytes"])
        assert any("Hugging Face Trainer's DDP" in line for line in res["auto"]["lines"])
        assert all(res[p]["errors"] == 0 for p in res), (rank, res)


@pytest.mark.slow
def test_accelerate_ddp_timed_once_and_other_hooks_and_fsdp_left_alone(tmp_path):
    pytest.importorskip("accelerate")
    for rank, res in enumerate(_torchrun("accelerate", tmp_path)):
        _opted_out(res["optout"])
        assert res["auto"]["wrapper"] == "DistributedDataParallel"
        _timed(res["auto"], None, res["auto"]["param_bytes"])
        # watch.ddp(model) by the user, then start(accelerator, model=model): no error, one count
        assert res["user"]["same_watch"]
        _timed(res["user"], res["auto"], res["auto"]["param_bytes"])
        # a model with its own comm hook (Python, then built-in): trained, not timed, said once
        for phase, previous, hook in (("foreign", "user", "allreduce_hook"),
                                      ("builtin", "foreign", "BuiltinCommHookType.ALLREDUCE")):
            got = res[phase]
            assert got["count"] == res[previous]["count"] and got["steps"] > res[previous]["steps"], got
            assert any(f"already has a comm hook ({hook})" in line for line in got["lines"]), got
        # nothing left behind by prepwatch on the models it did not time
        assert res["foreign"]["stale_entries"] == 1 and res["builtin"]["stale_entries"] == 0
        fsdp = res["fsdp"]
        assert any("DistributedDataParallel only" in line and "FSDP" in line for line in fsdp["lines"]), fsdp
        assert all(res[p]["errors"] == 0 for p in res), (rank, res)


# -- in one process: what watch.ddp() does when the model is already timed ------------------
@pytest.fixture
def one_rank_group():
    torch = pytest.importorskip("torch")
    import torch.distributed as dist
    from helpers import free_port

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield torch
    dist.destroy_process_group()


def test_watch_ddp_twice_is_one_hook_and_a_new_watch_takes_it_over(one_rank_group):
    torch = one_rank_group
    from torch.nn.parallel import DistributedDataParallel as DDP

    import prepwatch

    prepwatch.stop()
    first = prepwatch.start(run="twice", port=0, sources=False)
    try:
        model = DDP(torch.nn.Linear(4, 2))
        timer = first.ddp(model)
        assert first.ddp(model) is timer  # no "can only be called once" from DDP
        model(torch.randn(2, 4)).sum().backward()
        assert sum(timer.wait.counts) == 1
        with pytest.raises(RuntimeError, match="time_collectives=False"):
            first.ddp(model, hook=lambda state, bucket: None, state=None)
        prepwatch.stop()
        second = prepwatch.start(run="twice-2", port=0, sources=False)  # a new run, same model
        assert second.ddp(model) is timer
        model(torch.randn(2, 4)).sum().backward()
        from helpers import scrape, value

        assert value(scrape(second.url), "prepwatch_collective_wait_seconds_count") == 1.0
    finally:
        prepwatch.stop()


def test_a_refused_hook_leaves_nothing_behind(watch, one_rank_group):
    torch = one_rank_group
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(torch.nn.Linear(2, 2))
    model._register_builtin_comm_hook(dist.BuiltinCommHookType.ALLREDUCE)
    with pytest.raises(RuntimeError, match="hook=your_hook"):
        watch.ddp(model)
    assert model._comm_hooks == []  # DDP appended it before refusing; prepwatch took it out
    assert model._get_ddp_logging_data().get("comm_hook") == "BuiltinCommHookType.ALLREDUCE"


def test_time_collectives_is_silent_in_one_process(watch, one_rank_group, caplog):
    torch = one_rank_group
    from torch.nn.parallel import DistributedDataParallel as DDP

    from prepwatch.integrations._collective import time_collectives

    model = DDP(torch.nn.Linear(2, 2))
    with caplog.at_level("DEBUG", logger="prepwatch.integrations"):
        assert time_collectives(watch, model, "test") is None  # world size 1: nothing to wait for
        assert time_collectives(watch, torch.nn.Linear(2, 2), "test") is None
    assert model._comm_hooks == [] and not caplog.records


def test_time_collectives_option_must_be_a_bool():
    pytest.importorskip("transformers")
    from prepwatch.integrations.huggingface import PrepwatchCallback

    with pytest.raises(TypeError, match="time_collectives"):
        PrepwatchCallback(time_collectives="no")
