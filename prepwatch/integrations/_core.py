"""What the framework integrations share: the Watch, step-end marks, model hooks.

The loop signals themselves come from :class:`prepwatch.hooks.loader.WatchedLoader`
(or its grouped variant) wrapped around the iterator the framework consumes; this module
only adds what a framework-owned loop needs on top: framework time between batches
(evaluation, checkpoints, logging) taken off the step period, and forward hooks that
feed class health and the input contract from the model's real inputs.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterator, Optional

import prepwatch
from prepwatch.identity import Identity
from prepwatch.watch import Watch

log = logging.getLogger("prepwatch.integrations")
COMPONENT = "integration"
NAN = float("nan")


class CallbackOptions:
    """What every integration's callback takes and keeps, checked once at set-up."""

    def _set_options(
        self, *, run: Optional[str], class_recall: Any, class_health: Optional[dict[str, Any]],
        inputs: Any, inputs_options: Optional[dict[str, Any]], batch_size: Any,
        start_options: dict[str, Any], keyword: str, time_collectives: bool = True,
    ) -> None:
        if inputs is not None and not (inputs is True or isinstance(inputs, str)):
            raise TypeError(f"inputs= must be True or the name of a {keyword} keyword, got {inputs!r}")
        if not (isinstance(class_recall, bool) or callable(class_recall)):
            raise TypeError(f"class_recall= must be a bool or a callable, got {class_recall!r}")
        if not isinstance(time_collectives, bool):
            raise TypeError(f"time_collectives= must be a bool, got {time_collectives!r}")
        self.run = run
        self.class_recall = class_recall
        self.class_health_options = dict(class_health or {})
        self.inputs = inputs
        self.inputs_options = dict(inputs_options or {})
        self.batch_size = batch_size
        self.start_options = start_options
        self.time_collectives = time_collectives  # watch.ddp() on the framework's DDP model
        self.watch: Optional[Watch] = None
        self._marks: Optional[StepMarks] = None
        self._handles: list[Any] = []


def watch_for(identity: Identity, start_options: dict[str, Any]) -> Watch:
    """The running Watch, or one started with the framework's run/rank identity.

    A Watch started earlier by the user keeps its identity; a rank that disagrees with the
    framework's is counted once (two ranks would otherwise export under one label).
    """
    running = prepwatch.current()
    if running is None:
        return prepwatch.start(identity=identity, **start_options)
    mine = running.ctx.identity
    if (mine.rank, mine.world_size) != (identity.rank, identity.world_size):
        running.ctx.errors.report(COMPONENT, RuntimeError(
            f"prepwatch was started as rank {mine.rank} of {mine.world_size} but the Trainer "
            f"says rank {identity.rank} of {identity.world_size}: start prepwatch after the "
            "launcher sets RANK/WORLD_SIZE, or let the callback start it"
        ))
    return running


def framework_identity(run: Optional[str], rank: int, local_rank: int, world_size: int) -> Identity:
    """Identity from the framework's distributed state; run name as prepwatch finds it."""
    base = Identity.from_env(run)
    return Identity(run=base.run, rank=int(rank), local_rank=int(local_rank),
                    world_size=int(world_size))


class StepMarks:
    """Framework time between the end of a step and the next fetch, off the step period.

    The integration calls :meth:`step_end` from the framework's end-of-step callback;
    :meth:`wrap` sits between the timed generator and the framework's iterator and, when
    the loop asks for the next batch, hands the time since that mark to the loop metrics
    as excluded. Evaluation, checkpointing and logging all run in that gap, so none of
    them counts as step time; the fetch itself is timed after it, so none counts as data
    wait either. A new pass starts clean: a mark or exclusion left by an interrupted run
    is dropped.
    """

    def __init__(self, watch: Watch) -> None:
        self.loop = watch.loop
        self.mark = NAN

    def step_end(self) -> None:
        self.mark = time.perf_counter()

    def wrap(self, it: Iterator[Any]) -> Iterator[Any]:
        loop = self.loop
        clock = time.perf_counter
        self.mark = NAN
        loop.excluded = 0.0
        while True:
            mark = self.mark
            if mark == mark:
                loop.excluded += clock() - mark
                self.mark = NAN
            try:
                batch = next(it)
            except StopIteration:
                return
            yield batch


class ReportOnce:
    """Count every fault under ``component``; log it once (the sink's rule)."""

    def __init__(self, watch: Watch, component: str = COMPONENT) -> None:
        self._errors = watch.ctx.errors
        self._component = component

    def __call__(self, exc: BaseException) -> None:
        self._errors.report(self._component, exc)


def first_tensor(args: tuple, kwargs: dict, name: Optional[str]) -> Any:
    """The model input to record: ``kwargs[name]`` or the first positional tensor."""
    import torch

    if name is not None:
        value = kwargs.get(name)
        if value is None and args and isinstance(args[0], dict):
            value = args[0].get(name)
        return value
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value
    return None


def input_recorder(watch: Watch, name: Optional[str], options: dict[str, Any]) -> Callable[..., None]:
    """A forward pre-hook that records the model's real training input into the contract.

    Only while the model trains: evaluation batches are the clean side of the contract's
    comparison and would blur what training fed. ``watch.inputs().record`` samples one
    batch in ``sample_every`` itself, so the hook costs an integer increment otherwise.
    """
    monitor = watch.inputs(**options)
    report = ReportOnce(watch)

    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        if not module.training:
            return None
        try:
            x = first_tensor(args, kwargs, name)
            if x is not None:
                monitor.record(x)
        except Exception as exc:
            report(exc)
        return None

    return hook
