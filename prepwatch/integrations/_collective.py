"""Collective timing where a framework owns the model: ``watch.ddp()`` on its DDP wrapper.

Each integration hands over the model the framework will run (Lightning's
``trainer.strategy.model``, the Hugging Face Trainer's ``model_wrapped``, what
``accelerator.prepare()`` returned) after the framework wrapped it and before the first
backward. It is timed only when the job really runs DDP: ``torch.distributed`` is
initialized with more than one rank and the model is a ``DistributedDataParallel``
(unwrapped from ``torch.compile`` if needed). Never raises into the training job:

* a single process, or ``time_collectives=False``: nothing, silently;
* FSDP, DeepSpeed and other non-DDP wrappers: one info line (collective timing needs DDP);
* a model prepwatch already times (the user's own ``watch.ddp(model)``, a second ``fit``):
  kept as it is, one hook and one count;
* a model with someone else's comm hook (DDP takes one): left alone, one info line saying
  how to time it (``watch.ddp(model, hook=..., state=...)``);
* anything else that fails: counted under ``component="integration"``, logged once.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Optional

from prepwatch.integrations._core import COMPONENT
from prepwatch.watch import Watch

if TYPE_CHECKING:
    from prepwatch.hooks.collective import CollectiveTimer

log = logging.getLogger("prepwatch.integrations")
_said: set[str] = set()
_said_lock = threading.Lock()


def _info_once(key: str, message: str) -> None:
    """Log ``message`` once per process and ``key`` (not again at every ``fit``/``train``)."""
    with _said_lock:
        if key in _said:
            return
        _said.add(key)
    log.info(message)


def distributed_world() -> int:
    """World size of the initialized default process group; 1 when there is none."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_world_size())
    except Exception:  # a torch build without distributed, or a group being torn down
        pass
    return 1


def ddp_inside(model: Any) -> Any:
    """``model`` if it is a ``DistributedDataParallel``, or the one a compiled module wraps."""
    from torch.nn.parallel import DistributedDataParallel

    for _ in range(4):  # OptimizedModule(DDP(...)): accelerate compiles after wrapping
        if isinstance(model, DistributedDataParallel):
            return model
        model = getattr(model, "_orig_mod", None)
        if model is None:
            return None
    return None


def time_collectives(watch: Watch, model: Any, framework: str) -> Optional[CollectiveTimer]:
    """Register ``watch.ddp()`` on the framework's DDP model when the job runs DDP.

    Returns the timer (the one already registered, if any), or None where nothing is timed.
    """
    try:
        return _time(watch, model, framework)
    except Exception as exc:  # never into the training job
        watch.ctx.errors.report(COMPONENT, exc)
        return None


def _time(watch: Watch, model: Any, framework: str) -> Optional[CollectiveTimer]:
    from prepwatch.hooks.collective import other_hook, timer_of

    if model is None or distributed_world() <= 1:
        return None  # one process: no collective to wait in
    ddp = ddp_inside(model)
    if ddp is None:
        _info_once(f"not-ddp:{type(model).__name__}", (
            f"prepwatch: collective wait is timed for DistributedDataParallel only; {framework} "
            f"runs this job's model as {type(model).__name__} (FSDP, DeepSpeed: data wait, the "
            "input straggler and throughput rules still work; see docs/distributed.md)"
        ))
        return None
    existing = timer_of(ddp)
    if existing is not None:
        log.debug("prepwatch: %s's DDP model is already timed by watch.ddp()", framework)
        return watch.ddp(ddp)  # the same timer, bound to this Watch
    other = other_hook(ddp)
    if other is not None:
        _info_once(f"other-hook:{other}", (
            f"prepwatch: {framework}'s DDP model already has a comm hook ({other}); DDP takes "
            "one, so collective wait is not timed. To time it, register it through prepwatch "
            "instead: watch.ddp(model, hook=..., state=...) (docs/distributed.md)"
        ))
        return None
    try:
        timer = watch.ddp(ddp)
    except RuntimeError as exc:  # DDP refused the hook (registered elsewhere meanwhile)
        _info_once("refused", f"prepwatch: collective wait not timed: {exc}")
        return None
    log.info("prepwatch: timing %s's DDP gradient all-reduce (rank %d of %d)", framework,
             watch.ctx.identity.rank, distributed_world())
    return timer
