"""A timed loader for frameworks that fetch every micro-batch of a step at once.

The Hugging Face Trainer calls ``next()`` ``gradient_accumulation_steps`` times in a row
(``get_batch_samples``) and only then runs the micro-batches. Timed batch by batch, three
of four step periods would be a few microseconds and the fourth the whole optimizer step:
p50 collapses, p99/p50 explodes and the step-time-unstable alert fires on a healthy job.
Here each batch still counts (data wait per fetch, steps, samples, exactly as a
hand-written loop), but the period of a group, from the previous group's last batch to
this group's last batch, is shared evenly by the batches that arrived in it. The sum of
periods (and so the data-wait share) is the same as per batch; only their spread within
an optimizer step is smoothed.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, TypeVar

from prepwatch.hooks.loader import _MASK, WatchedLoader

T = TypeVar("T")


class GroupedLoader(WatchedLoader[T]):
    """:class:`WatchedLoader` whose step periods are per group of ``group`` batches.

    Groups start at the start of each pass (as the Trainer's accumulation windows do);
    a last, shorter group is closed at the pass' last batch (from ``len()``). A pass the
    loop abandons (an exception, a stop) drops its incomplete group's periods: observing
    them when the iterator is collected, maybe during the next run, would mix runs.
    """

    def __init__(self, *args: Any, group: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(group, int) or group < 1:
            raise ValueError(f"group must be a positive int, got {group!r}")
        self._group = group

    def _generate(self, it: Iterator[T]) -> Iterator[T]:
        if self._group == 1:
            return super()._generate(it)  # no extra generator frame per batch
        return self._grouped(it)

    def _grouped(self, it: Iterator[T]) -> Iterator[T]:
        loop = self._loop
        clock = time.perf_counter
        sizer = self._sizer
        t0 = clock()
        loop.first_wait_started_perf = t0
        try:
            batch = next(it)
        except StopIteration:
            return
        finally:
            loop.first_wait_started_perf = float("nan")
        t1 = clock()
        loop.last_batch_perf = t1
        try:
            loop.first_wait.observe(t1 - t0)
            loop.steps.value += 1
            loop.samples.value += sizer(batch)
        except Exception as exc:
            self._errors.report("loader", exc)
        group, wait, steps, samples = self._group, loop.data_wait, loop.steps, loop.samples
        try:
            length = len(self._iterable)  # type: ignore[arg-type]
        except Exception:
            length = -1  # unsized: the last group closes at StopIteration
        span_start = t1
        seen = 1  # batches of this pass
        pending = 0  # batches whose period is not observed yet
        position = 1  # batches of the current group seen
        yield batch
        while True:
            t0 = clock()
            try:
                batch = next(it)
            except StopIteration:
                if pending:  # an unsized pass ended: its last group is complete now
                    self._close(span_start, loop.last_batch_perf, pending)
                return
            t1 = clock()
            try:
                wait.observe(t1 - t0)
                loop.last_batch_perf = t1
                steps.value += 1
                samples.value += sizer(batch)
                seen += 1
                pending += 1
                position += 1
                if position == group or seen == length:
                    self._close(span_start, t1, pending)
                    span_start, pending, position = t1, 0, 0
            except Exception as exc:
                self._errors.report("loader", exc)
            yield batch

    def _close(self, start: float, end: float, n: int) -> None:
        loop = self._loop
        span = end - start
        if loop.excluded:
            span -= loop.excluded
            loop.excluded = 0.0
        period = span / n
        step, ring = loop.step, loop.ring
        for _ in range(n):
            step.observe(period)
            pos = loop.ring_pos
            ring[pos & _MASK] = period
            loop.ring_pos = pos + 1
