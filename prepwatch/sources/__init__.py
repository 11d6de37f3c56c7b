"""Signal sources beside the training loop: GPU (NVML), process tree and host (psutil), IO.

``start_sources`` is what the node agent and a standalone ``prepwatch.start()`` call:
one daemon thread samples every source at ``interval`` seconds, off the training
loop's path. Each source registers its families in ``ctx.registry`` and reports its
faults to ``ctx.errors``; an absent source (no NVIDIA driver, a field a container
does not provide) switches itself off with one log line and a 0 on its
``*_available`` gauge. What each source exports: docs/sources.md.

IO inside DataLoader workers is not sampled here: it is timed where it happens, see
:mod:`prepwatch.hooks.open_hook`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional, Sequence

from prepwatch.context import Context
from prepwatch.internal_threads import mark_internal_thread, unmark_internal_thread
from prepwatch.sources.gpu import GpuSampler
from prepwatch.sources.host import HostSampler, ProcessSampler, ProcessTree
from prepwatch.sources.rank_processes import RankIdentities, RankProcessSampler

log = logging.getLogger("prepwatch")

__all__ = [
    "GpuSampler",
    "HostSampler",
    "ProcessSampler",
    "ProcessTree",
    "RankProcessSampler",
    "SamplerLoop",
    "start_sources",
]


class SamplerLoop:
    """One daemon thread that calls ``sample()`` on each source every ``interval`` seconds.

    A source that raises is counted under its ``name`` in
    ``prepwatch_internal_errors_total`` and asked again next tick; the others go on.
    Ticks are on a fixed schedule; a late tick is skipped, never run twice.
    """

    def __init__(
        self,
        sources: Sequence[Any],
        interval: float,
        on_error: Callable[[str, BaseException], None],
    ) -> None:
        if not interval > 0:
            raise ValueError(f"sampling interval must be > 0 seconds, got {interval!r}")
        self.sources = list(sources)
        self.interval = float(interval)
        self._on_error = on_error
        self._stop = threading.Event()
        self.ticks = 0
        self._thread = threading.Thread(target=self._run, name="prepwatch-sources", daemon=True)

    def start(self) -> SamplerLoop:
        self._thread.start()
        return self

    def tick(self) -> None:
        for source in self.sources:
            if self._stop.is_set():
                return
            try:
                source.sample()
            except Exception as exc:
                self._on_error(getattr(source, "name", "sources"), exc)
        self.ticks += 1

    def _run(self) -> None:
        mark_internal_thread()  # psutil's reads of /proc are not the dataset's opens
        try:
            next_at = time.monotonic()
            while not self._stop.is_set():
                self.tick()
                next_at += self.interval
                now = time.monotonic()
                if next_at < now:  # fell behind (suspended, overloaded): skip, do not burst
                    next_at = now + self.interval
                if self._stop.wait(next_at - now):
                    break
        finally:
            unmark_internal_thread()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and release the sources (NVML). Safe to call twice."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for source in self.sources:
            try:
                source.close()
            except Exception as exc:
                self._on_error(getattr(source, "name", "sources"), exc)
        self.sources = []


def start_sources(
    ctx: Context,
    *,
    pids: Callable[[], list[int]],
    interval: float,
    gpu: bool = True,
    host: bool = True,
    nvml_lib: Optional[Any] = None,
    ranks: Optional[RankIdentities] = None,
) -> list[SamplerLoop]:
    """Start the GPU, process-tree and host samplers in one background thread.

    Args:
        ctx: the agent's or process' context.
        pids: the training processes' pids (main process of each rank); their
            descendants (DataLoader workers) are found here.
        interval: seconds between samples (1.0 by default upstream).
        gpu, host: switch a source family off.
        nvml_lib: NVML binding (default ``pynvml``); NVML starts lazily in the thread.
        ranks: the node agent's registered ranks (``{pid: {"run", "rank"}}``): process
            series are then kept per rank and carry its ``run`` and ``rank``.

    Returns a list with the one :class:`SamplerLoop`; ``close()`` stops it.
    """
    if not callable(pids):
        raise TypeError(f"start_sources(pids=...) must be a callable returning pids, got {pids!r}")
    from prepwatch.sources.nvml import Nvml

    sources: list[Any] = []
    tree = ProcessTree(pids)
    per_rank = RankProcessSampler(ranks) if ranks is not None else None
    if host:
        if per_rank is not None:
            ctx.registry.register(per_rank, "process")
            sources.append(per_rank)
        else:
            sources.append(ProcessSampler(ctx, tree))
        sources.append(HostSampler(ctx))
    if gpu:
        nvml = Nvml(nvml_lib, on_error=ctx.errors.report)
        # Without the process sampler nothing refreshes the tree: GPU selection then
        # matches the main pids only.
        job_pids = (per_rank.job_pids if per_rank is not None else tree.job_pids) if host else (
            lambda: {int(p) for p in pids()})
        sources.append(GpuSampler(ctx, job_pids=job_pids, nvml=nvml))
    ctx.errors.precreate(*(s.name for s in sources))
    loop = SamplerLoop(sources, interval, ctx.errors.report)
    return [loop.start()]
