"""The Watch: one object per training process that owns its metrics and hooks.

It is created by :func:`prepwatch.start`. It owns what records in this process (the
loop metrics, the worker-stats table, the recorder that stage timers and the open hook
write into, the open hook itself) and the exporter that serves it. Capability
components (class health, inputs, boxes, clips) are created on first use by their
accessor, so a job pays only for what it calls; every accessor returns its component's
own type, and every component keeps the :class:`~prepwatch.checks.common.component.Component`
contract that :meth:`Watch.stop` relies on.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Protocol, TypeVar

from prepwatch.context import Context
from prepwatch.hooks.loader import WatchedLoader
from prepwatch.hooks.loop_metrics import LoopMetrics
from prepwatch.hooks.open_hook import OpenHook
from prepwatch.hooks.open_hook import instrument_open as _instrument_open
from prepwatch.hooks.worker_recorder import set_recorder
from prepwatch.hooks.worker_stats import WorkerStats

if TYPE_CHECKING:  # components import torch; they load on first use, not with the Watch
    from prepwatch.checks.boxes import BoxMonitor
    from prepwatch.checks.class_health import ClassHealth
    from prepwatch.checks.clips import ClipMonitor
    from prepwatch.checks.common.component import Component
    from prepwatch.checks.inputs import InputMonitor
    from prepwatch.hooks.collective import CollectiveTimer

T = TypeVar("T")
C = TypeVar("C", bound="Component")


class Exporter(Protocol):
    """Where this process' metrics go: its own HTTP endpoint or the node agent's link."""

    @property
    def url(self) -> Optional[str]:
        """The /metrics URL when this process serves itself; None behind an agent."""
        ...

    def close(self) -> None:
        """Stop serving (release the port or the agent socket). Idempotent."""
        ...


class Watch:
    """Handle returned by :func:`prepwatch.start`; every method is safe to call per step."""

    def __init__(self, ctx: Context, exporter: Optional[Exporter], artifacts_dir: Path | None) -> None:
        self.ctx = ctx
        self._exporter = exporter
        self.artifacts_dir = artifacts_dir
        self.loop = LoopMetrics(ctx)
        self.worker_stats = WorkerStats(ctx)
        self._components: dict[str, Component] = {}
        self._open_hook: Optional[OpenHook] = None
        self._lock = threading.Lock()

    # -- recording in this process -------------------------------------------------------
    def start_recording(self, *, instrument_open: bool = False) -> None:
        """Point stage timers (and, if asked, a process-wide open hook) at this Watch."""
        set_recorder(self.worker_stats.main_recorder, stages_outside_samples=False)
        if instrument_open and self._open_hook is None:
            self._open_hook = _instrument_open()

    def _stop_recording(self) -> None:
        set_recorder(None)  # stage timers and the open hook stop recording into it
        if self._open_hook is not None:
            self._open_hook.close()
            self._open_hook = None

    # -- loop ---------------------------------------------------------------------------
    def loader(
        self,
        iterable: Iterable[T],
        *,
        batch_size: int | Callable[[Any], int] | None = None,
        dataloader: Any = None,
        worker_timing: bool = True,
    ) -> WatchedLoader[T]:
        """Wrap a DataLoader (or any iterable of batches) to time what the loop waits for.

        Emits ``prepwatch_data_wait_seconds``, ``prepwatch_step_duration_seconds``,
        ``prepwatch_samples_total`` and ``prepwatch_last_step_timestamp_seconds``; when the
        DataLoader has workers, also ``prepwatch_sample_fetch_seconds{stage="total"}``
        measured inside them. Wrap the outermost iterable the loop consumes (for
        example a prefetcher); pass the DataLoader behind it as ``dataloader=`` to get
        worker timings too.
        """
        return WatchedLoader(
            iterable, self.loop, self.worker_stats, self.ctx.errors, batch_size=batch_size,
            dataloader=dataloader, worker_timing=worker_timing,
        )

    def ddp(self, model: Any, *, hook: Any = None, state: Any = None) -> CollectiveTimer:
        """Time the gradient all-reduce of a ``DistributedDataParallel`` model, per rank.

        Registers a DDP communication hook (call before the first backward) that exports
        ``prepwatch_collective_wait_seconds``: how long each backward stayed blocked in the
        all-reduce after its own compute ended. Gradients are unchanged; nothing waits on
        the device. Already using a comm hook? Pass it as ``hook=``/``state=`` (DDP takes
        one): it still reduces, and is timed. See docs/distributed.md.
        """
        from prepwatch.hooks.collective import install

        return install(self.ctx, model, hook=hook, state=state)

    # -- capability components -------------------------------------------------------
    def _component(self, key: str, factory: Callable[[], C], options: dict[str, Any]) -> C:
        with self._lock:
            existing = self._components.get(key)
            if existing is not None:
                if options:
                    raise ValueError(
                        f"watch.{key}() was already configured; pass options only on the first call"
                    )
                return existing  # type: ignore[return-value]
            component = factory()
            self._components[key] = component
            return component

    def class_health(self, **options: Any) -> ClassHealth:
        """Per-class recall on the augmented train stream and clean eval data.

        Options are :class:`prepwatch.checks.class_health.ClassHealth`'s. Per step:
        ``health.train_predictions(logits, y)``; per evaluation batch:
        ``health.eval_predictions(logits, y)`` (no device sync on either).
        """
        from prepwatch.checks.class_health import ClassHealth

        return self._component("class_health", lambda: ClassHealth(self.ctx, **options), options)

    def inputs(self, **options: Any) -> InputMonitor:
        """Input normalization contract: capture at training, guard at serving.

        Options are :class:`prepwatch.checks.inputs.InputMonitor`'s.
        """
        from prepwatch.checks.inputs import InputMonitor

        return self._component("inputs", lambda: InputMonitor(self.ctx, **options), options)

    def boxes(self, **options: Any) -> BoxMonitor:
        """Box sanity, transform alignment probes and overlays on the training stream.

        Options are :class:`prepwatch.checks.boxes.BoxMonitor`'s: ``transform=`` turns on
        alignment probes (every ``probe_every`` batches or ``probe_interval`` seconds,
        within ``probe_budget`` of wall time) on images sized from the first observed batch
        unless ``image_size=(width, height)`` is given; ``box_format=`` is ``xyxy``,
        ``xyxy_inclusive``, ``xywh``, ``cxcywh`` or a normalized ``xyxy_norm``,
        ``xywh_norm``, ``cxcywh_norm`` (YOLO, DETR). Padded batches pass their true sizes
        per call: ``observe(images, targets, image_sizes=[...])``.
        """
        from prepwatch.checks.boxes import BoxMonitor

        return self._component(
            "boxes", lambda: BoxMonitor(self.ctx, artifacts_dir=self.artifacts_dir, **options),
            options,
        )

    def clips(self, **options: Any) -> ClipMonitor:
        """Temporal consistency of video clip augmentation.

        Options go to :class:`prepwatch.checks.clips.ClipMonitor`; ``layout="NCTHW"`` for
        (N, C, T, H, W) batches (PyTorchVideo, SlowFast, X3D), default ``"NTCHW"``.
        """
        from prepwatch.checks.clips import ClipMonitor

        return self._component("clips", lambda: ClipMonitor(self.ctx, **options), options)

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def url(self) -> str | None:
        """Where this process' metrics are served (None when an agent serves them)."""
        return self._exporter.url if self._exporter is not None else None

    def flush(self, timeout: float = 30.0) -> bool:
        """Export everything the components still hold (e.g. before a final scrape)."""
        done = True
        for name, component in list(self._components.items()):
            try:
                done = component.flush(timeout) and done
            except Exception as exc:
                self.ctx.errors.report(name, exc)
                done = False
        return done

    def stop(self) -> None:
        """Write the end-of-run summary, close every component, stop recording, release
        the port or agent link.

        Safe to call twice; :func:`prepwatch.stop` calls it.
        """
        if self._exporter is not None:
            from prepwatch.summary.hooks import on_watch_stop

            on_watch_stop(self)  # end-of-run summary; never raises
        for name, component in list(self._components.items()):
            try:
                component.close()
            except Exception as exc:
                self.ctx.errors.report(name, exc)
        self._stop_recording()
        if self._exporter is not None:
            self._exporter.close()
            self._exporter = None

