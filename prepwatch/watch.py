"""The Watch: one object per training process that owns its metrics and hooks.

It is created by :func:`prepwatch.start`. Capability components (class health,
input contract, boxes, clips) are created on first use so a job pays only for what
it calls.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from prepwatch.context import Context
from prepwatch.hooks.loader import WatchedLoader
from prepwatch.hooks.loop_metrics import LoopMetrics
from prepwatch.hooks.worker_stats import WorkerStats

T = TypeVar("T")


class Watch:
    """Handle returned by :func:`prepwatch.start`; every method is safe to call per step."""

    def __init__(self, ctx: Context, exporter: Any, artifacts_dir: Path | None) -> None:
        self.ctx = ctx
        self._exporter = exporter
        self.artifacts_dir = artifacts_dir
        self.loop = LoopMetrics(ctx)
        self.worker_stats = WorkerStats(ctx)
        self._components: dict[str, Any] = {}
        self._open_hook: Any = None
        self._lock = threading.Lock()

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
            iterable, self.loop, self.worker_stats, batch_size=batch_size,
            dataloader=dataloader, worker_timing=worker_timing,
        )

    # -- capability components -------------------------------------------------------
    def _component(self, key: str, factory: Callable[[], Any], options: dict[str, Any]) -> Any:
        with self._lock:
            existing = self._components.get(key)
            if existing is not None:
                if options:
                    raise ValueError(
                        f"watch.{key}() was already configured; pass options only on the first call"
                    )
                return existing
            component = self._components[key] = factory()
            return component

    def class_health(self, **options: Any) -> Any:
        """Per-class recall on the augmented train stream and clean eval data."""
        from prepwatch.checks.class_health import ClassHealth

        return self._component("class_health", lambda: ClassHealth(self.ctx, **options), options)

    def train_predictions(self, predictions: Any, targets: Any, **kwargs: Any) -> None:
        """Count per-class hits of the augmented training stream (no device sync)."""
        self.class_health().train_predictions(predictions, targets, **kwargs)

    def eval_predictions(self, predictions: Any, targets: Any, **kwargs: Any) -> None:
        """Count per-class hits on clean evaluation data."""
        self.class_health().eval_predictions(predictions, targets, **kwargs)

    def report_augmentation(self, **params: float) -> None:
        """Export named augmentation strengths as gauges, to read recall changes against."""
        self.class_health().report_augmentation(**params)

    def inputs(self, **options: Any) -> Any:
        """Input normalization contract: capture at training, guard at serving."""
        from prepwatch.checks.normalization import InputMonitor

        return self._component("inputs", lambda: InputMonitor(self.ctx, **options), options)

    def boxes(self, **options: Any) -> Any:
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

    def clips(self, **options: Any) -> Any:
        """Temporal consistency of video clip augmentation.

        Options go to :class:`prepwatch.checks.video.ClipMonitor`; ``layout="NCTHW"`` for
        (N, C, T, H, W) batches (PyTorchVideo, SlowFast, X3D), default ``"NTCHW"``.
        """
        from prepwatch.checks.video import ClipMonitor

        return self._component("clips", lambda: ClipMonitor(self.ctx, **options), options)

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def url(self) -> str | None:
        """Where this process' metrics are served (None when an agent serves them)."""
        return getattr(self._exporter, "url", None)

    def stop(self) -> None:
        """Stop serving and release the port or agent link. Safe to call twice."""
        if self._exporter is not None:
            from prepwatch.summary.hooks import on_watch_stop

            on_watch_stop(self)  # end-of-run summary; never raises
        for component in list(self._components.values()):
            close = getattr(component, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    self.ctx.errors.report("close", exc)
        if self._exporter is not None:
            self._exporter.close()
            self._exporter = None
