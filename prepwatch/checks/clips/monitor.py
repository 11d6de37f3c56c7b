"""Clip augmentation consistency on the training stream, and probes of the clip transform.

``watch.clips(...)`` returns a :class:`ClipMonitor`. Two ways to feed it:

- ``clips.observe(raw, augmented)`` where both are at hand (augmentation on the GPU in
  the loop, or a dataset that returns both): (T, C, H, W) clips or (N, T, C, H, W)
  batches; every ``sample_every``-th call is measured. ``layout="NCTHW"`` reads (C, T, H,
  W) clips and (N, C, T, H, W) batches instead, as PyTorchVideo, SlowFast and X3D use
  (the probe then feeds the transform (C, T, H, W) clips too).
- ``watch.clips(transform=clip_transform)``: every ``probe_every``-th call of
  :meth:`ClipMonitor.step` (or of ``observe``), a generated clip whose content dims over
  time goes through the transform (on its own random numbers) and is measured. This
  works wherever the transform runs, including DataLoader workers, because the probe
  runs its own copy here.

Measuring runs off the step path: a sampled ``observe`` copies its clips to host memory
and hands them to a background thread (one, bounded: when it is still busy the clips are
dropped, never queued without bound); a probe runs the transform in the loop (its own
random numbers are drawn there) and hands the pair over the same way. The thread
measures with one torch intra-op thread (a per-thread setting: the loop keeps its own)
and BLAS limited to one thread where ``threadpoolctl`` is installed, so a measurement
does not fan out over the cores the job is using. Measured cost per clip and
on the loop: ``bench/bench_clips.py`` (docs/clips.md). Observed clips and probes each
take at most ``budget`` (default 1%) of wall time, measured on the thread, whatever the
cadence asks for. ``check()`` and ``probe()`` measure at once (synchronous), for tests
and one-off use.

What is measured is explained in :mod:`prepwatch.checks.clips.consistency`.

Errors. Options are checked at set-up. The first ``observe`` call checks the layout: a
batch that is plainly (N, C, T, H, W) under the default layout (dimension 1 is 1 or 3,
dimension 2 is not 1, 3 or 4) raises ValueError naming ``layout="NCTHW"``, since read
the wrong way round frames become channels (per-frame jitter is missed, a consistent
per-channel colour change is flagged). After that nothing raises into the training
loop: a bad observation is skipped and counted in ``prepwatch_internal_errors_total
{component="clips"}``.

Metrics:

- ``prepwatch_clip_photometric_jitter{source}``: histogram of per-clip jitter (frame-to-frame
  variation of the photometric change, relative to the signal; 0 = perfectly consistent)
- ``prepwatch_clips_total{source, outcome}``: consistent, inconsistent, skipped
- ``prepwatch_clip_jitter_threshold``: the threshold in use (dashboards draw it)
- ``prepwatch_clip_check_seconds_total{part}``: time spent in ``observe`` and ``probe``
  on the training loop (copying clips, running the probe transform), and in ``measure``
  on the background thread

``source`` is ``stream`` (observed clips) or ``probe`` (generated clips).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from prepwatch.checks.clips.consistency import (
    DEFAULT_THRESHOLD,
    ClipReport,
    clip_consistency,
    wrong_layout,
)
from prepwatch.checks.clips.synthetic import brightness_ramp, textured_clip
from prepwatch.checks.common.background import BackgroundWorker
from prepwatch.checks.common.rng import isolated_rng
from prepwatch.checks.common.transforms import is_tv_transform
from prepwatch.context import Context

JITTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0)
OUTCOMES = ("consistent", "inconsistent", "skipped")
SOURCES = ("stream", "probe")
COMPONENT = "clips"
LAYOUTS = ("NTCHW", "NCTHW")


class ClipMonitor:
    """Measures whether clip augmentation treats all frames of a clip alike."""

    def __init__(
        self,
        ctx: Context,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        sample_every: int = 10,
        max_clips: int = 2,
        transform: Callable[[Any], Any] | None = None,
        probe_every: int = 50,
        budget: float = 0.01,
        probe_shape: tuple[int, int, int] = (8, 128, 128),
        probe_dtype: str = "float",
        tv_tensors: bool | None = None,
        max_pixels: int = 2048,
        seed: int = 0,
        layout: str = "NTCHW",
    ) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"threshold is a relative variation in (0, 1), got {threshold}")
        for name, value in (("sample_every", sample_every), ("max_clips", max_clips),
                            ("probe_every", probe_every)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0 < budget <= 1:
            raise ValueError(f"budget is a share of wall time in (0, 1], got {budget}")
        frames, height, width = probe_shape
        if frames < 2 or height < 16 or width < 16:
            raise ValueError(f"probe_shape (T, H, W) needs T >= 2 and 16x16 frames, got {probe_shape}")
        if probe_dtype not in ("float", "uint8"):
            raise ValueError(f"probe_dtype must be 'float' or 'uint8', got {probe_dtype!r}")
        if layout not in LAYOUTS:
            raise ValueError(
                f"layout must be 'NTCHW' (torchvision) or 'NCTHW' (PyTorchVideo, SlowFast,"
                f" X3D), got {layout!r}"
            )
        if layout == "NCTHW" and tv_tensors:
            raise ValueError(
                "tv_tensors=True wraps probe clips as torchvision Videos, which are"
                " (T, C, H, W); it does not go with layout='NCTHW'"
            )
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.ctx = ctx
        self.threshold = float(threshold)
        self.sample_every = int(sample_every)
        self.max_clips = int(max_clips)
        self.max_pixels = int(max_pixels)
        self.transform = transform
        self.probe_every = int(probe_every)
        self.budget = float(budget)
        self.probe_shape = (int(frames), int(height), int(width))
        self.probe_dtype = probe_dtype
        self.layout = layout
        self._clip_layout = layout[1:]  # one clip of a batch: "TCHW" or "CTHW"
        self.tv_tensors = (
            is_tv_transform(transform) and layout == "NTCHW"
            if tv_tensors is None and transform is not None
            else bool(tv_tensors)
        )
        if self.tv_tensors:
            import torchvision.tv_tensors  # noqa: F401 - fail at set-up, not per probe
        self.seed = int(seed)
        self._rng = np.random.default_rng(seed)
        self._calls = 0
        self._probes = 0
        self._next_probe_call = self.probe_every
        self._next_probe_time = 0.0
        self._next_check_time = 0.0
        self._bind_metrics()
        self._pending = 0  # handed to the thread, not measured yet (one writer each way)
        self._thread_limited = False
        self._worker: BackgroundWorker[tuple[list[tuple[Any, Any]], str, bool]] = BackgroundWorker(
            "prepwatch-clips", self._measure, capacity=1,
            on_error=lambda exc: ctx.errors.report(COMPONENT, exc),
        )

    def _bind_metrics(self) -> None:
        reg = self.ctx.registry
        hist = reg.histogram(
            "prepwatch_clip_photometric_jitter",
            "Per clip: frame-to-frame variation of the photometric change (augmented vs raw),"
            " relative to the signal; 0 means every frame was treated alike.",
            ["source"], buckets=JITTER_BUCKETS,
        )
        self._jitter = {s: hist.labels(s) for s in SOURCES}
        clips = reg.counter(
            "prepwatch_clips_total", "Clips checked for augmentation consistency, by outcome.",
            ["source", "outcome"],
        )
        self._outcomes = {(s, o): clips.labels(s, o) for s in SOURCES for o in OUTCOMES}
        reg.gauge(
            "prepwatch_clip_jitter_threshold",
            "Jitter above which a clip counts as inconsistent (pixel mode).",
        ).labels().set(self.threshold)
        seconds = reg.counter(
            "prepwatch_clip_check_seconds_total", "Training-loop time spent in clip checks.",
            ["part"],
        )
        self._seconds = {p: seconds.labels(p) for p in ("observe", "probe", "measure")}
        self.ctx.errors.precreate(COMPONENT)

    # -- stream -------------------------------------------------------------------------
    def observe(self, raw: Any, augmented: Any) -> None:
        """Account raw and augmented clips (T, C, H, W) or batches (N, T, C, H, W).

        (C, T, H, W) / (N, C, T, H, W) with ``layout="NCTHW"``. Cheap unless this call is
        sampled. The first call raises ValueError when the layout is plainly wrong (the
        wiring mistake shows there); later calls never raise. Also advances the probe
        cadence.
        """
        if self._calls == 0:
            self._check_layout(raw)
        self._calls += 1
        if (self._calls % self.sample_every == 0 and not self._pending
                and time.monotonic() >= self._next_check_time):
            start = time.perf_counter()
            try:
                self._submit((_host_copies(self._pairs(raw, augmented)), "stream", False))
            except Exception as exc:
                self.ctx.errors.report(COMPONENT, exc)
            self._seconds["observe"].inc(time.perf_counter() - start)
        self._maybe_probe()

    def _submit(self, item: tuple[list[tuple[Any, Any]], str, bool]) -> None:
        self._pending += 1
        if not self._worker.submit(item):
            self._pending -= 1

    def _measure(self, item: tuple[list[tuple[Any, Any]], str, bool]) -> None:
        """On the background thread: measure, record, and space the next measurement."""
        pairs, source, stationary = item
        if not self._thread_limited:
            # Per OS thread (OpenMP's thread count is a per-thread setting): the loop keeps
            # its threads. On a busy 2-core host torch's two intra-op threads made a
            # measurement 10x slower (4 s instead of 0.3 s a clip): each parallel region
            # waited for a descheduled helper.
            torch.set_num_threads(1)
            self._thread_limited = True
        start = time.perf_counter()
        try:
            with _one_blas_thread():
                for r, a in pairs:
                    self.record(clip_consistency(
                        r, a, threshold=self.threshold, max_pixels=self.max_pixels,
                        layout=self._clip_layout, stationary=stationary,
                    ), source)
        finally:
            spent = time.perf_counter() - start
            self._seconds["measure"].inc(spent)
            if source == "stream":
                self._next_check_time = self._after(spent)
            else:
                self._next_probe_time = max(self._next_probe_time, self._after(spent))
            self._pending -= 1  # last: the loop may hand over the next clips from here

    def step(self) -> None:
        """Advance the probe cadence once per training step (when not calling observe)."""
        self._calls += 1
        self._maybe_probe()

    def _check_layout(self, raw: Any) -> None:
        """Raise when the default layout is in use and ``raw`` is plainly the other one."""
        shape = getattr(raw, "shape", None)
        if self.layout != "NTCHW" or shape is None:
            return
        problem = wrong_layout(tuple(shape), "clips", 'layout="NCTHW" to watch.clips(...)')
        if problem:
            raise ValueError(problem)

    def check(self, raw: Any, augmented: Any, *, source: str = "stream") -> list[ClipReport]:
        """Measure now (up to ``max_clips`` clips of a batch) and record the results."""
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        self._check_layout(raw)
        reports = []
        for r, a in self._pairs(raw, augmented):
            report = clip_consistency(
                r, a, threshold=self.threshold, max_pixels=self.max_pixels,
                layout=self._clip_layout,
            )
            self.record(report, source)
            reports.append(report)
        return reports

    def _pairs(self, raw: Any, augmented: Any) -> list[tuple[Any, Any]]:
        dims = "C, T, H, W" if self.layout == "NCTHW" else "T, C, H, W"
        if raw.ndim == 4:
            return [(raw, augmented)]
        if raw.ndim == 5:
            n = min(len(raw), self.max_clips)
            return [(raw[i], augmented[i]) for i in range(n)]
        raise ValueError(
            f"expected clips ({dims}) or (N, {dims}) (layout={self.layout!r}),"
            f" got {tuple(raw.shape)}"
        )

    def record(self, report: ClipReport, source: str = "stream") -> None:
        if report.jitter is None or report.consistent is None:
            self._outcomes[(source, "skipped")].inc()
            return
        self._jitter[source].observe(report.jitter)
        outcome = "consistent" if report.consistent else "inconsistent"
        self._outcomes[(source, outcome)].inc()

    # -- probe --------------------------------------------------------------------------
    def _maybe_probe(self) -> None:
        if self.transform is None or self._calls < self._next_probe_call:
            return
        if self._pending or time.monotonic() < self._next_probe_time:
            return  # the thread is still measuring: probe at a later step
        start = time.perf_counter()
        try:
            raw, augmented = self._probe_pair()  # the transform runs here, on its own RNG
            # Probe clips are stationary texture: whole-frame statistics may stand in.
            self._submit(([(raw, _host(augmented))], "probe", True))
        except Exception as exc:
            self.ctx.errors.report(COMPONENT, exc)
        spent = time.perf_counter() - start
        self._seconds["probe"].inc(spent)
        self._next_probe_call = self._calls + self.probe_every
        self._next_probe_time = self._after(spent)

    def _after(self, spent: float) -> float:
        """When the next measurement may start: each kind takes at most ``budget`` of wall
        time, so after ``spent`` seconds it waits ``spent * (1/budget - 1)``."""
        return time.monotonic() + spent * (1.0 / self.budget - 1.0)

    def probe(self, clips: int = 1) -> list[ClipReport]:
        """Push ``clips`` generated clips through the transform now and record them."""
        if self.transform is None:
            return []
        start = time.perf_counter()
        reports = []
        try:
            for _ in range(clips):
                raw, augmented = self._probe_pair()
                # Probe clips are stationary texture: when a crop cannot be located,
                # whole-frame statistics stand in for the region's.
                report = clip_consistency(
                    raw, augmented, threshold=self.threshold, max_pixels=self.max_pixels,
                    layout=self._clip_layout, stationary=True,
                )
                self.record(report, "probe")
                reports.append(report)
        except Exception as exc:
            self.ctx.errors.report(COMPONENT, exc)
        finally:
            self._seconds["probe"].inc(time.perf_counter() - start)
        return reports

    def _probe_pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        frames, height, width = self.probe_shape
        dim = float(self._rng.uniform(0.5, 0.9))  # the content dims: must not count as jitter
        gains = brightness_ramp(frames, 1.0, dim) if self._rng.integers(2) else None
        raw = textured_clip(self._rng, frames, height, width, gains=gains)
        if self.layout == "NCTHW":
            raw = raw.permute(1, 0, 2, 3).contiguous()  # (C, T, H, W), as the transform takes
        clip_in: Any = raw
        if self.probe_dtype == "uint8":
            raw = torch.round(raw * 255.0)
            clip_in = raw.to(torch.uint8)
        if self.tv_tensors:
            from torchvision import tv_tensors

            clip_in = tv_tensors.Video(clip_in)
        with isolated_rng(self.seed * 1_000_003 + self._probes):
            out = self.transform(clip_in)  # type: ignore[misc]
        self._probes += 1
        if isinstance(out, torch.Tensor):
            out = out.as_subclass(torch.Tensor)
        return raw, out

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the background thread has measured every clip handed to it."""
        return self._worker.flush(timeout)

    def close(self) -> None:
        """Finish the pending measurement and stop the thread. Safe to call twice."""
        self._worker.close()


def _host(x: Any) -> Any:
    """A host copy the loop may not touch again (device tensors are copied off)."""
    if isinstance(x, torch.Tensor):
        return x.detach().as_subclass(torch.Tensor).to("cpu", copy=True)
    return np.array(x, copy=True)


def _host_copies(pairs: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    return [(_host(r), _host(a)) for r, a in pairs]


def _one_blas_thread() -> Any:
    """Limit BLAS to one thread while measuring, where threadpoolctl is installed.

    The measurement's matrices are small (a few thousand pixels by ~10 features): on a
    busy host numpy's default of one BLAS thread per core cost 1.6 s for a clip that
    takes 0.1 s on one thread (issue 14).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
