"""Time the gradient all-reduce of a DDP model: where a synchronous rank's step goes.

In synchronous data-parallel training every rank's step period is the slowest rank's,
so step time cannot name a straggler. What differs between ranks is *where* the step
goes: a rank that waits for its peers spends that time blocked in the all-reduce at the
end of backward. This module measures that blocked time per backward pass, per rank:

    collective wait = (completion of the step's last all-reduce)
                      - (launch of the step's last bucket, i.e. end of backward compute)

Buckets launched earlier overlap with backward compute and are not wait; after the last
bucket is launched the rank has nothing left to compute and DDP blocks until every
bucket is reduced. The rank that waits least is the straggler; step period minus data
wait minus collective wait is the rank's own work.

How it is measured, without changing training or synchronizing the device:

* a DDP communication hook wraps the default all-reduce (or the user's own hook) and
  returns the very future that hook returns, extended by a ``then()`` callback that
  passes the reduced tensor through unchanged. The default reducer scales each gradient
  by ``1/world_size`` before summing (a multiply, not a divide); :func:`mean_allreduce`
  does exactly that, so gradients are bit-identical to DDP without a hook
  (tests/test_collective.py checks it on 3 gloo ranks).
* CPU tensors (gloo): the callback runs when the work completes and reads the clock.
* CUDA tensors (NCCL): the callback runs when the work is *enqueued*, so the clock would
  lie. Instead a CUDA event is recorded on the compute stream at the last bucket's launch
  and one on the communication stream in the callback; the pair is read later with
  ``Event.query()`` (non-blocking) from the next backward's first hook call or at scrape,
  never ``synchronize()``. A pair not yet complete is simply read next time.

Exports (per process; the exporter adds ``run`` and ``rank``):
``prepwatch_collective_wait_seconds`` histogram (one observation per synchronized
backward pass) and ``prepwatch_collective_bytes_total`` (gradient bytes reduced).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

from prepwatch.context import Context
from prepwatch.metrics import WAIT_BUCKETS

Hook = Callable[[Any, Any], Any]  # (state, GradBucket) -> torch.futures.Future[Tensor]
PENDING_CUDA_PAIRS = 64  # bound on unread event pairs (a stalled reader never grows memory)


def mean_allreduce(process_group: Any, bucket: Any) -> Any:
    """DDP's built-in reduction: scale by 1/world_size, then all-reduce by sum.

    Same arithmetic as the C++ reducer without a hook (``mul`` by the reciprocal, not
    ``div``), so training is unchanged to the bit. ``torch.distributed.algorithms.
    ddp_comm_hooks.default_hooks.allreduce_hook`` divides instead, which differs in the
    last bit for world sizes that are not a power of two.
    """
    return _launch_mean(process_group, bucket).then(lambda fut: fut.value()[0])


def _launch_mean(process_group: Any, bucket: Any) -> Any:
    """Start :func:`mean_allreduce`'s work; the future's value is ``[reduced bucket]``.

    The timer unwraps the list in its own callback: one Python callback per bucket, not two.
    """
    import torch.distributed as dist

    group = process_group if process_group is not None else dist.group.WORLD
    tensor = bucket.buffer()
    tensor.mul_(1.0 / group.size())
    return dist.all_reduce(tensor, group=group, async_op=True).get_future()


class _Step:
    """One backward pass. Lock-free: the training thread alone writes ``launched`` and
    ``last_launch``; completion callbacks append their time, then draw a ticket from an
    ``itertools.count`` (atomic in CPython), so exactly one of them, the last to complete,
    sees every bucket done and observes the wait."""

    __slots__ = ("launched", "last_launch", "done_times", "completions")

    def __init__(self) -> None:
        self.launched = 0
        self.last_launch = -1.0
        self.done_times: list[float] = []
        self.completions = itertools.count()


class CollectiveTimer:
    """The state object of the timing comm hook; one per DDP model.

    ``hook`` (default :func:`mean_allreduce`) and ``state`` (its first argument,
    default the model's process group) are what actually reduces.
    """

    def __init__(self, ctx: Context, hook: Optional[Hook] = None, state: Any = None) -> None:
        self.bind(ctx)
        self.inner: Hook = hook or mean_allreduce
        self.state = state
        self._step = _Step()
        self._cuda_pairs: deque[tuple[Any, Any]] = deque(maxlen=PENDING_CUDA_PAIRS)
        self._drain_lock = threading.Lock()

    def bind(self, ctx: Context) -> None:
        """Record into ``ctx``'s registry: DDP keeps this object as the hook's state for the
        model's life, so a Watch started later (a new run in the same process) rebinds it."""
        reg = ctx.registry
        self._errors = ctx.errors
        self.wait = reg.histogram(
            "prepwatch_collective_wait_seconds",
            "Time a backward pass stayed blocked in the gradient all-reduce after its own "
            "compute ended (waiting for peers and the network), per synchronized step.",
            buckets=WAIT_BUCKETS,
        ).labels()
        self.bytes = reg.counter(
            "prepwatch_collective_bytes_total", "Gradient bytes this rank all-reduced."
        ).labels()
        self._registry = reg
        self._drain_registered = False

    # -- the hook (runs on the training thread, inside backward) ------------------------
    def hook(self, bucket: Any) -> Any:
        """Reduce ``bucket`` with the inner hook and time it (called by DDP via
        :func:`prepwatch_collective_hook`)."""
        try:
            buffer = bucket.buffer()
            self.bytes.value += buffer.numel() * buffer.element_size()
            if buffer.is_cuda:
                return self._cuda(bucket)
            return self._cpu(bucket)
        except Exception as exc:  # our bookkeeping failed: reduce untimed, never break DDP
            self._errors.report("collective", exc)
            return self.inner(self.state, bucket)

    def _cpu(self, bucket: Any) -> Any:
        step = self._step
        step.launched += 1
        if bucket.is_last():  # set before the launch: its completion must see it
            step.last_launch = time.perf_counter()
            self._step = _Step()  # later buckets belong to the next backward
        fut, unwrap = self._launch(bucket)

        def finished(f: Any) -> Any:
            try:
                step.done_times.append(time.perf_counter())
                ticket = next(step.completions)
                if step.last_launch >= 0 and ticket + 1 == step.launched:
                    self.wait.observe(max(0.0, max(step.done_times) - step.last_launch))
            except Exception as exc:
                self._errors.report("collective", exc)
            value = f.value()  # the reduced bucket, untouched
            return value[0] if unwrap else value

        return fut.then(finished)

    def _launch(self, bucket: Any) -> tuple[Any, bool]:
        """The inner hook's future, and whether its value is still ``[tensor]``."""
        if self.inner is mean_allreduce:
            return _launch_mean(self.state, bucket), True
        return self.inner(self.state, bucket), False

    def _cuda(self, bucket: Any) -> Any:
        import torch

        if not self._drain_registered:  # scrapes read completed pairs too (CUDA only)
            self._drain_registered = True
            self._registry.register(_Drain(self), component="collective")
        if bucket.index() == 0:
            self.drain()  # the previous step's pair is usually complete by now
        if not bucket.is_last():
            return self.inner(self.state, bucket)
        # Collectives on one communicator run in order: the last bucket finishes last.
        start = torch.cuda.Event(enable_timing=True)
        start.record()  # compute stream: backward's own work is done here
        fut, unwrap = self._launch(bucket)

        def finished(f: Any) -> Any:
            try:
                end = torch.cuda.Event(enable_timing=True)
                end.record()  # the future's stream is current in a CUDA future's callback
                self._cuda_pairs.append((start, end))
            except Exception as exc:
                self._errors.report("collective", exc)
            value = f.value()
            return value[0] if unwrap else value

        return fut.then(finished)

    # -- reading CUDA events off the step path ------------------------------------------
    def drain(self) -> None:
        """Observe every completed event pair; never waits for an incomplete one.

        Called from the training thread and from scrapes: whoever holds the drain lock
        reads, the other returns at once (no waiting on the step path).
        """
        if not self._cuda_pairs or not self._drain_lock.acquire(blocking=False):
            return
        pairs = self._cuda_pairs
        try:
            while pairs:
                start, end = pairs[0]
                if not end.query():
                    return
                pairs.popleft()
                self.wait.observe(max(0.0, start.elapsed_time(end) / 1000.0))
        except Exception as exc:
            self._errors.report("collective", exc)
        finally:
            self._drain_lock.release()


def prepwatch_collective_hook(state, bucket):  # type: ignore[no-untyped-def]
    """The function DDP calls; ``state`` is the :class:`CollectiveTimer`.

    Unannotated on purpose: DDP checks a comm hook's signature and accepts only a
    parameter named ``bucket`` annotated with GradBucket or not at all (a string
    annotation from ``from __future__ import annotations`` fails its check).
    """
    return state.hook(bucket)


class _Drain:
    """Registered collector: reads completed CUDA event pairs at scrape; exports nothing."""

    def __init__(self, timer: CollectiveTimer) -> None:
        self._timer = timer

    def collect(self) -> list[Any]:
        self._timer.drain()
        return []


def install(ctx: Context, model: Any, hook: Optional[Hook] = None, state: Any = None) -> CollectiveTimer:
    """Register the timing comm hook on a ``DistributedDataParallel`` model.

    ``hook``/``state``: a comm hook you would otherwise register yourself (DDP takes
    only one); it still does the reduction and its result is returned unchanged.
    """
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(model, DistributedDataParallel):
        raise TypeError(
            f"watch.ddp() needs a torch.nn.parallel.DistributedDataParallel model, got "
            f"{type(model).__name__}; wrap the model in DDP first (FSDP and DeepSpeed: see "
            "docs/distributed.md)"
        )
    existing = timer_of(model)
    if existing is not None:
        if hook is not None or state is not None:
            raise RuntimeError(
                "watch.ddp(): prepwatch already times this model's default all-reduce (an "
                "integration does so automatically) and DDP takes one comm hook: to time your "
                "own, pass time_collectives=False to the integration's callback"
            )
        if existing._registry is not ctx.registry:
            existing.bind(ctx)
        return existing  # already timed (an integration or an earlier call): one hook, one count
    if state is None and hook is None:
        state = model.process_group
    timer = CollectiveTimer(ctx, hook=hook, state=state)
    previous = other_hook(model)
    try:
        model.register_comm_hook(timer, prepwatch_collective_hook)
    except RuntimeError as exc:
        _undo(model, timer, previous)
        raise RuntimeError(
            f"watch.ddp() could not register its communication hook ({exc}). DDP takes one "
            "comm hook per model: if you register your own, pass it instead, "
            "watch.ddp(model, hook=your_hook, state=your_state), and prepwatch times it"
        ) from exc
    return timer


def timer_of(model: Any) -> Optional[CollectiveTimer]:
    """The timer prepwatch registered on this DDP model, if any."""
    for _hook, state in getattr(model, "_comm_hooks", ()):
        if isinstance(state, CollectiveTimer):
            return state
    return None


def other_hook(model: Any) -> Optional[str]:
    """The name of a comm hook already registered on ``model`` that is not prepwatch's.

    Python hooks are listed in ``_comm_hooks``; built-in (C++) ones only in DDP's logging
    data. Read-only: a failed ``register_comm_hook`` would itself leave a stale entry.
    """
    for hook, state in getattr(model, "_comm_hooks", ()):
        if not isinstance(state, CollectiveTimer):
            return str(getattr(hook, "__qualname__", hook))
    try:
        name = model._get_ddp_logging_data().get("comm_hook")
    except Exception:  # a DDP without logging data: registration will tell
        return None
    return str(name) if name else None


def _undo(model: Any, timer: CollectiveTimer, previous: Optional[str]) -> None:
    """Remove what a refused ``register_comm_hook`` left: DDP appends the hook to
    ``_comm_hooks`` (used by compiled autograd) and renames it in its logging data first."""
    hooks = getattr(model, "_comm_hooks", None)
    if hooks and hooks[-1][1] is timer:
        hooks.pop()
    if previous is not None and getattr(model, "logger", None) is not None:
        try:
            model.logger._set_comm_hook_name(previous)
        except Exception:
            pass
