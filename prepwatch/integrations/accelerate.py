"""Accelerate: a hand-written loop, so the one line is still ``watch.loader()``.

Recipe (docs/integrations.md)::

    model, opt, train_dl = accelerator.prepare(model, opt, train_dl)
    watch = prepwatch.integrations.accelerate.start(accelerator, model=model)  # rank, DDP timing
    for batch in watch.loader(train_dl):                              # what the loop waits for
        with accelerator.accumulate(model):
            ...

``accelerator.prepare()`` returns a ``DataLoaderShard`` that fetches one batch ahead and
moves it to the device; wrapping it times exactly what the loop waits for, and
``watch.loader()`` finds the torch DataLoader inside it (``base_dataloader``) to install
the worker-side fetch timings there, where its workers run them. With
``accelerator.accumulate()`` the loop still fetches one micro-batch at a time, so each is a
step, as in any hand-written loop. The only thing this module adds is :func:`start`,
which takes the rank from the Accelerator rather than the environment, and, given the
model ``prepare()`` returned, times its gradient all-reduce when that is a
``DistributedDataParallel`` in a multi-process job (``watch.ddp``; ``time_collectives=False``
turns it off). The model must be passed: the Accelerator keeps only the unwrapped module
(``_models``), never the DDP wrapper it returned.
"""

from __future__ import annotations

from typing import Any, Optional

from prepwatch.integrations._collective import time_collectives as _time_collectives
from prepwatch.integrations._core import framework_identity, watch_for
from prepwatch.watch import Watch

__all__ = ["start"]


def start(accelerator: Any, run: Optional[str] = None, *, model: Any = None,
          time_collectives: bool = True, **start_options: Any) -> Watch:
    """:func:`prepwatch.start` with rank, local rank and world size from ``accelerator``.

    ``model``: what ``accelerator.prepare()`` returned; with ``time_collectives`` (default)
    its all-reduce is timed by ``watch.ddp()`` when it is a DDP model in a multi-process job,
    and left alone otherwise (one process, FSDP, DeepSpeed: one info line). Call ``start``
    after ``prepare`` and before the first backward.
    """
    if not isinstance(time_collectives, bool):
        raise TypeError(f"time_collectives= must be a bool, got {time_collectives!r}")
    identity = framework_identity(run, accelerator.process_index, accelerator.local_process_index,
                                  accelerator.num_processes)
    watch = watch_for(identity, start_options)
    if time_collectives and model is not None:
        _time_collectives(watch, model, "Accelerate")
    return watch
