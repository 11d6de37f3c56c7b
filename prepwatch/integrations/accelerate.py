"""Accelerate: a hand-written loop, so the one line is still ``watch.loader()``.

Recipe (docs/integrations.md)::

    model, opt, train_dl = accelerator.prepare(model, opt, train_dl)
    watch = prepwatch.integrations.accelerate.start(accelerator)      # rank from Accelerate
    for batch in watch.loader(train_dl):                              # what the loop waits for
        with accelerator.accumulate(model):
            ...

``accelerator.prepare()`` returns a ``DataLoaderShard`` that fetches one batch ahead and
moves it to the device; wrapping it times exactly what the loop waits for, and
``watch.loader()`` finds the torch DataLoader inside it (``base_dataloader``) to install
the worker-side fetch timings there, where its workers run them. With
``accelerator.accumulate()`` the loop still fetches one micro-batch at a time, so each is a
step, as in any hand-written loop. The only thing this module adds is :func:`start`,
which takes the rank from the Accelerator rather than the environment.
"""

from __future__ import annotations

from typing import Any, Optional

from prepwatch.integrations._core import framework_identity, watch_for
from prepwatch.watch import Watch

__all__ = ["start"]


def start(accelerator: Any, run: Optional[str] = None, **start_options: Any) -> Watch:
    """:func:`prepwatch.start` with rank, local rank and world size from ``accelerator``."""
    identity = framework_identity(run, accelerator.process_index, accelerator.local_process_index,
                                  accelerator.num_processes)
    return watch_for(identity, start_options)
