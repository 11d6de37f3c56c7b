"""Box integrity on the training stream: sanity counts, online alignment probes, overlays.

``watch.boxes(...)`` returns a :class:`BoxMonitor`; call :meth:`BoxMonitor.observe` with
each augmented batch as the loader yields it (before moving it to the GPU):

    boxes = watch.boxes(transform=train_transform, overlay_every=500)
    for images, targets in watch.loader(loader):
        boxes.observe(images, targets)

Three things happen, each on its own cadence so the loop pays almost nothing:

- every ``sample_every``-th batch: each box gets a sanity outcome (kept, clipped,
  out_of_bounds, degenerate; dropped when the targets say how many boxes went in);
- when ``transform`` is given: every ``probe_every``-th batch or every ``probe_interval``
  seconds, whichever comes first, and never more than ``probe_budget`` of wall time,
  ``probe_trials`` alignment probes are pushed through that same transform (see
  :mod:`prepwatch.checks.boxes.alignment`) on their own random numbers, on probe images a
  little larger than the first observed batch's images;
- every ``overlay_every``-th batch (off by default): a PNG grid of the batch with its
  boxes is written on a background thread under ``<artifacts>/overlays/``.

Metrics (no labels beyond those listed; ``run`` and ``rank`` are added at exposition):

- ``prepwatch_boxes_total{outcome}``: boxes leaving the transform, by sanity outcome
- ``prepwatch_box_alignment_iou``: IoU of each probed box with where its object went
- ``prepwatch_box_alignment_error_pixels``: worst edge (or centre) error of each probed box
- ``prepwatch_box_alignment_checks_total{result}``: probe trials: aligned, misaligned,
  inconclusive, error (the transform or the probe raised: nothing was judged)
- ``prepwatch_box_misalignments_total{kind}``: iou, offset, out_of_bounds, foreign, phantom
- ``prepwatch_box_check_seconds_total{part}``: loop time spent in sanity, probe, overlay
- ``prepwatch_box_overlays_total``, ``prepwatch_box_overlay_last_timestamp_seconds``,
  ``prepwatch_box_overlay_info{path}`` (URL path of the latest overlay),
  ``prepwatch_overlays_available`` (0 when Pillow is missing)
- ``prepwatch_box_probe_form_info{image_kind, tv_tensors, how}``: what the probe hands the
  transform, set after the first probe that ran (``how``: given, default, detected)
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from prepwatch.checks.boxes.alignment import MISALIGNMENT_KINDS, RESULTS, Probe, ProbeReport
from prepwatch.checks.boxes.batch import Batch, canvas_size, cpu_copy, size_pair
from prepwatch.checks.boxes.formats import (
    OUTCOMES,
    check_format,
    classify,
)
from prepwatch.checks.boxes.overlays import (
    LATEST,
    OverlayWriter,
    Panel,
    label_color,
    pillow_available,
    to_display,
)
from prepwatch.context import Context
from prepwatch.metrics import sanitize_label_value

log = logging.getLogger("prepwatch")

IOU_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)
# 0.5 px is the axis-aligned tolerance, 1 px the flip off-by-one, 2 px the offset/iou split.
ERROR_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)
PARTS = ("sanity", "probe", "overlay")
COMPONENT = "boxes"
# Probe trials that could not run (the transform raised on the probe image, or the
# probe itself failed): counted under this result so a blind check shows.
CHECK_RESULTS = RESULTS + ("error",)

# At least one probe round every PROBE_INTERVAL_S seconds, however slow the steps: 2
# trials per 15 s are ~80 trials per 10 minutes, four times the 20 judged trials the
# alert needs (twice when half of them are inconclusive). At 5-15 ms a trial (the torchvision detection
# recipe on 128x96 probes; ~65 ms on 800x540) that is 0.07-0.9% of wall time; dearer
# transforms are held to probe_budget by the spacing after each round.
PROBE_INTERVAL_S = 15.0
# A round due by time on a job whose steps are longer than the interval runs one round
# per interval elapsed, up to this many, so a 60 s/step job still gets ~8 trials a step.
MAX_CATCH_UP_ROUNDS = 4
# Probe canvas (width, height) before any batch is seen, and the floor afterwards.
DEFAULT_PROBE_SIZE = (128, 96)


class BoxMonitor:
    """Sanity counts, online alignment probes and overlays for a detection pipeline."""

    def __init__(
        self,
        ctx: Context,
        artifacts_dir: Path | str | None = None,
        *,
        transform: Callable[..., Any] | None = None,
        probe_every: int = 50,
        probe_trials: int = 2,
        probe_budget: float = 0.01,
        probe_interval: float = PROBE_INTERVAL_S,
        image_size: tuple[int, int] | None = None,
        call: str = "auto",
        box_format: str = "xyxy",
        image_kind: str | None = None,
        tv_tensors: bool | None = None,
        sample_every: int = 10,
        min_size: float = 0.0,
        overlay_every: int = 0,
        overlay_keep: int = 20,
        overlay_max_images: int = 16,
        class_names: Sequence[str] | None = None,
        artifacts_url: str | None = None,
        seed: int = 0,
    ) -> None:
        for name, value in (("probe_every", probe_every), ("probe_trials", probe_trials),
                            ("sample_every", sample_every), ("overlay_max_images", overlay_max_images)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if overlay_every < 0:
            raise ValueError(f"overlay_every must be >= 0 (0 = off), got {overlay_every}")
        if not 0 < probe_budget <= 1:
            raise ValueError(f"probe_budget is a share of wall time in (0, 1], got {probe_budget}")
        if not probe_interval > 0:
            raise ValueError(f"probe_interval must be > 0 seconds, got {probe_interval}")
        self.ctx = ctx
        self.box_format = check_format(box_format, normalized=True)
        self.sample_every = int(sample_every)
        self.min_size = float(min_size)
        self.probe_every = int(probe_every)
        self.probe_trials = int(probe_trials)
        self.probe_budget = float(probe_budget)
        self.probe_interval = float(probe_interval)
        self.overlay_every = int(overlay_every)
        self.overlay_max_images = int(overlay_max_images)
        self.class_names = list(class_names) if class_names is not None else None
        self._step = 0
        self._next_probe_step = self.probe_every
        self._next_probe_due = time.monotonic() + self.probe_interval  # by wall time
        self._next_probe_time = 0.0  # earliest the budget allows
        self._last_probe: float | None = None
        self._closed = False
        self._failure_logged = False

        self._probe: Probe | None = None
        # Probe image size: explicit, else read from the first observed batch.
        self._canvas_pending = transform is not None and image_size is None
        if transform is not None:
            self._probe = Probe(
                transform, image_size=image_size or DEFAULT_PROBE_SIZE, call=call,
                box_format=box_format, image_kind=image_kind, tv_tensors=tv_tensors, seed=seed,
            )
        self._bind_metrics()
        self._overlays: OverlayWriter | None = None
        if overlay_every:
            self._setup_overlays(artifacts_dir, overlay_keep, artifacts_url)

    # -- set-up -------------------------------------------------------------------------
    def _bind_metrics(self) -> None:
        reg = self.ctx.registry
        boxes = reg.counter(
            "prepwatch_boxes_total",
            "Boxes leaving the augmentation, by sanity outcome (sampled batches).",
            ["outcome"],
        )
        self._outcome = [boxes.labels(o) for o in OUTCOMES]
        self._iou = reg.histogram(
            "prepwatch_box_alignment_iou",
            "IoU of each probed box with the enclosing box of where its object's pixels went.",
            buckets=IOU_BUCKETS,
        ).labels()
        self._error = reg.histogram(
            "prepwatch_box_alignment_error_pixels",
            "Worst edge (axis-aligned) or centre (rotated) error of each probed box, output pixels.",
            buckets=ERROR_BUCKETS,
        ).labels()
        checks = reg.counter(
            "prepwatch_box_alignment_checks_total",
            "Alignment probe trials pushed through the training transform, by result "
            "(error: the transform or the probe raised, nothing was judged).",
            ["result"],
        )
        self._results = {r: checks.labels(r) for r in CHECK_RESULTS}
        mis = reg.counter(
            "prepwatch_box_misalignments_total",
            "Misaligned probe trials by kind (iou, offset, out_of_bounds, foreign, phantom).",
            ["kind"],
        )
        self._kinds = {k: mis.labels(k) for k in MISALIGNMENT_KINDS}
        seconds = reg.counter(
            "prepwatch_box_check_seconds_total",
            "Training-loop time spent in box checks, by part.",
            ["part"],
        )
        self._seconds = {p: seconds.labels(p) for p in PARTS}
        self._overlays_total = reg.counter(
            "prepwatch_box_overlays_total", "Overlay grids written.",
        ).labels()
        self._overlay_ts = reg.gauge(
            "prepwatch_box_overlay_last_timestamp_seconds", "When the latest overlay was written.",
        ).labels()
        self._overlay_ts.set(math.nan)
        self._available = reg.gauge(
            "prepwatch_overlays_available", "1 when Pillow is installed and overlays can be drawn.",
        ).labels()
        self._form_info = reg.gauge(
            "prepwatch_box_probe_form_info",
            "What the alignment probe hands the transform (1): image_kind, tv_tensors, and "
            "how it was chosen (given, default, detected on the first probe).",
            ["image_kind", "tv_tensors", "how"],
        )
        self._form_reported = False
        self.ctx.errors.precreate(COMPONENT)

    def _setup_overlays(self, artifacts_dir: Path | str | None, keep: int, url: str | None) -> None:
        if artifacts_dir is None:
            raise ValueError(
                "overlay_every needs a directory to write to: start prepwatch with an "
                "state directory (prepwatch.start(state_dir=...)) or leave overlays off"
            )
        if not pillow_available():
            self._available.set(0)
            log.warning(
                "prepwatch: overlays are off because Pillow is not installed; "
                "pip install 'prepwatch[overlays]' to draw sampled batches with their boxes"
            )
            return
        self._available.set(1)
        directory = Path(artifacts_dir) / "overlays"
        directory.mkdir(parents=True, exist_ok=True)
        prefix = url if url is not None else self._default_url(Path(artifacts_dir))
        path = f"{prefix.rstrip('/')}/overlays/{LATEST}"
        self.ctx.registry.gauge(
            "prepwatch_box_overlay_info",
            "1; the path label is where the agent serves the latest overlay image.",
            ["path"],
        ).labels(sanitize_label_value(path, max_length=200)).set(1)
        self._overlays = OverlayWriter(
            directory, keep=keep, on_written=self._written,
            on_error=lambda exc: self.ctx.errors.report(COMPONENT, exc),
        )

    def _default_url(self, artifacts_dir: Path) -> str:
        """Where the exporter serves ``artifacts_dir``: ``/artifacts/<run>/rank<N>``.

        prepwatch.start() puts each process' artifacts at ``<root>/<run>/rank<N>`` and the
        exporter (or agent) serves ``<root>`` at ``/artifacts``. Pass ``artifacts_url`` when
        the layout differs.
        """
        ident = self.ctx.identity
        tail = (ident.run, f"rank{ident.rank}")
        if tuple(artifacts_dir.parts[-2:]) == tail:
            return f"/artifacts/{tail[0]}/{tail[1]}"
        return f"/artifacts/{artifacts_dir.name}"

    def _written(self, path: Path) -> None:
        self._overlays_total.inc()
        self._overlay_ts.set(time.time())

    @property
    def probe_size(self) -> tuple[int, int] | None:
        """(width, height) of the probe images, or None without a transform."""
        return (self._probe.width, self._probe.height) if self._probe is not None else None

    @property
    def overlay_dir(self) -> Path | None:
        return self._overlays.directory if self._overlays is not None else None

    # -- per batch ----------------------------------------------------------------------
    def observe(
        self,
        images: Any,
        boxes: Any = None,
        labels: Any = None,
        *,
        boxes_in: Any = None,
        image_sizes: Any = None,
    ) -> None:
        """Account one augmented batch. Cheap except on sampled steps; never raises.

        ``images``: a (N, C, H, W) tensor or a list of (C, H, W) images (canvas sizes are
        read from them). ``boxes``: per-image boxes (list of (K, 4) tensors in
        ``box_format``, or ``tv_tensors.BoundingBoxes``) or a list of target dicts with
        ``"boxes"``, optional ``"labels"`` and optional ``"boxes_in"`` (how many boxes the
        sample had before augmentation, to count dropped boxes). ``boxes_in`` may also be
        given here as a sequence of counts. ``image_sizes``: the true (H, W) of each image
        when the batch is padded to a common size (torchvision ``ImageList.image_sizes``,
        DETR ``[t["size"] for t in targets]``): boxes are checked against, and normalized
        boxes scaled by, these instead of the padded size.
        """
        self._step += 1
        step = self._step
        if self._canvas_pending:
            self._adopt_canvas(images, image_sizes)
            if self._probe is not None and _carries_tv_boxes(boxes):
                self._probe.adapter.prefer_tv_tensors()  # the pipeline feeds tv_tensors
        sample = step % self.sample_every == 0
        overlay = self._overlays is not None and step % self.overlay_every == 0
        by_steps = step >= self._next_probe_step
        probe = self._probe is not None and (by_steps or time.monotonic() >= self._next_probe_due)
        if not (sample or overlay or probe):
            return
        try:
            if sample or overlay:
                start = time.perf_counter()
                parsed = Batch.parse(images, boxes, labels, boxes_in, self.box_format, image_sizes)
                if sample:
                    self._sanity(parsed)
                    self._seconds["sanity"].inc(time.perf_counter() - start)
                if overlay:
                    start = time.perf_counter()
                    self._overlay(step, images, parsed)
                    self._seconds["overlay"].inc(time.perf_counter() - start)
            if probe:
                self._maybe_probe(by_steps)
        except Exception as exc:
            self.ctx.errors.report(COMPONENT, exc)

    def _adopt_canvas(self, images: Any, image_sizes: Any) -> None:
        """Size the probe images from the first observed batch (the transform's output).

        A quarter wider and an eighth taller than those images, and at least
        :data:`DEFAULT_PROBE_SIZE`: fixed-size crops of the training images fit (and get
        room to move, so a crop that does not shift its boxes shows), and square images
        give non-square probes, so a width/height swap shows.
        """
        self._canvas_pending = False
        assert self._probe is not None
        try:
            if image_sizes is not None and len(image_sizes):
                height, width = size_pair(image_sizes[0])
            elif isinstance(images, torch.Tensor) and images.dim() == 4:
                height, width = int(images.shape[-2]), int(images.shape[-1])
            else:
                height, width = canvas_size(images[0])
            self._probe.set_image_size((
                max(DEFAULT_PROBE_SIZE[0], width + width // 4),
                max(DEFAULT_PROBE_SIZE[1], height + height // 8),
            ))
        except Exception as exc:
            self.ctx.errors.report(COMPONENT, exc)

    def _sanity(self, batch: Batch) -> None:
        totals = np.zeros(len(OUTCOMES), dtype=np.int64)
        if len(batch.boxes):
            sizes = np.repeat(np.asarray(batch.canvases, dtype=np.float64), batch.counts, axis=0)
            outcome = classify(batch.boxes, sizes[:, 1], sizes[:, 0], min_size=self.min_size)
            totals += np.bincount(outcome, minlength=len(OUTCOMES))
        dropped = sum(
            max(0, n_in - n) for n_in, n in zip(batch.boxes_in, batch.counts) if n_in is not None
        )
        totals[OUTCOMES.index("dropped")] += dropped
        for child, n in zip(self._outcome, totals.tolist()):
            if n:
                child.inc(n)

    def _overlay(self, step: int, images: Any, batch: Batch) -> None:
        assert self._overlays is not None
        n = min(len(batch.counts), self.overlay_max_images)
        copies = [cpu_copy(images[i]) for i in range(n)]
        per_image = batch.per_image()[:n]
        labels = [batch.labels(i) for i in range(n)]
        names = self.class_names

        def panels() -> list[Panel]:
            out = []
            for img, b, lab in zip(copies, per_image, labels):
                texts, colors = [], []
                for j in range(len(b)):
                    if lab is not None and j < len(lab):
                        k = int(lab[j])
                        texts.append(names[k] if names and 0 <= k < len(names) else str(k))
                        colors.append(label_color(k))
                    else:
                        texts.append("")
                        colors.append((255, 255, 0))
                out.append(Panel(to_display(img), b, texts, colors, caption=f"step {step}"))
            return out

        self._overlays.submit(step, panels)

    def _maybe_probe(self, by_steps: bool) -> None:
        now = time.monotonic()
        if now < self._next_probe_time:
            return
        rounds = 1
        if not by_steps and self._last_probe is not None:
            # Due by time: steps longer than the interval get a round per interval elapsed.
            elapsed = now - self._last_probe
            rounds = int(min(MAX_CATCH_UP_ROUNDS, max(1.0, elapsed // self.probe_interval)))
        self._last_probe = now
        start = time.perf_counter()
        self.probe(self.probe_trials * rounds)
        spent = time.perf_counter() - start
        self._next_probe_step = self._step + self.probe_every
        after = time.monotonic()
        self._next_probe_due = after + self.probe_interval
        # Probes may take at most probe_budget of wall time: wait spent * (1/b - 1).
        self._next_probe_time = after + spent * (1.0 / self.probe_budget - 1.0)

    # -- probing ------------------------------------------------------------------------
    def probe(self, trials: int | None = None) -> ProbeReport | None:
        """Push ``trials`` alignment probes through the transform now and record them."""
        if self._probe is None:
            return None
        n = trials or self.probe_trials
        start = time.perf_counter()
        try:
            report = self._probe.run(n)
        except Exception as exc:
            self._results["error"].inc(n)
            self._log_failure(exc)
            self.ctx.errors.report(COMPONENT, exc)
            return None
        finally:
            self._seconds["probe"].inc(time.perf_counter() - start)
        if not self._form_reported:
            self._report_form()
        self.record(report)
        return report

    def _report_form(self) -> None:
        """Say once, in a log line and an info gauge, what the probe hands the transform."""
        assert self._probe is not None
        form = self._probe.form
        if form is None:
            return
        self._form_reported = True
        self._form_info.labels(form.image_kind, str(form.tv_tensors).lower(), form.how).set(1.0)
        if form.how == "detected":
            log.warning(
                "prepwatch: the box alignment probe hands the transform %s: it raised on %s. "
                "Set watch.boxes(tv_tensors=%s, image_kind=%r) to choose explicitly.",
                form.describe(), "; ".join(form.refused), form.tv_tensors, form.image_kind,
            )
        else:
            log.info("prepwatch: the box alignment probe hands the transform %s (%s).",
                     form.describe(), form.how)

    def _log_failure(self, exc: BaseException) -> None:
        if self._failure_logged:
            return
        self._failure_logged = True
        assert self._probe is not None
        log.warning(
            "prepwatch: the box alignment probe could not run on %dx%d probe images "
            "(%s: %s): its trials count as prepwatch_box_alignment_checks_total"
            "{result=\"error\"} and judge nothing. If the transform needs larger inputs "
            "(a fixed-size crop), pass watch.boxes(image_size=(width, height)) of your "
            "training images.",
            self._probe.width, self._probe.height, type(exc).__name__, exc,
        )

    def record(self, report: ProbeReport) -> None:
        """Export a probe report's verdicts (also for reports run elsewhere)."""
        for t in report.trials:
            self._results[t.result].inc()
            if t.kind:
                self._kinds[t.kind].inc()
            if t.iou is not None:
                self._iou.observe(t.iou)
            if t.error_px is not None:
                self._error.observe(t.error_px)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait for a pending overlay to be written (tests, end of a run)."""
        if self._overlays is not None:
            return self._overlays.flush(timeout)
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._overlays is not None:
            self._overlays.close()


def _carries_tv_boxes(boxes: Any) -> bool:
    """Whether an observed batch's boxes are ``tv_tensors.BoundingBoxes`` (by type name:
    torchvision is not imported for this)."""
    try:
        first = boxes[0] if isinstance(boxes, (list, tuple)) and boxes else boxes
        if isinstance(first, dict):
            first = first.get("boxes")
        return type(first).__name__ == "BoundingBoxes"
    except Exception:
        return False
