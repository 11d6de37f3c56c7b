"""watch.boxes() on realistic pipelines: large fixed-size crops, normalized boxes, padded
batches and slow jobs.

Each case here was blind before: probes on a fixed 128x96 canvas raised on every trial of
a 320 px crop and only an internal-error counter saw it; YOLO/DETR boxes in [0, 1] were
compared with a pixel canvas; a job slower than ~1.2 s a step never reached the 20 trials
per 10 minutes the misalignment alert needs.
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
import torch
from helpers import parse, value
from prometheus_client import generate_latest

from prepwatch.checks.boxes import monitor as boxes_module
from prepwatch.checks.boxes.alignment import check_transform
from prepwatch.checks.boxes.monitor import BoxMonitor
from prepwatch.context import Context
from prepwatch.demo import geometry_transforms as gt
from prepwatch.identity import Identity

torch.set_num_threads(1)

RESULTS = ("aligned", "misaligned", "inconclusive", "error")


def ctx() -> Context:
    return Context.create(Identity(run="job", rank=0))


def checks(c: Context) -> dict[str, float]:
    s = parse(generate_latest(c.registry).decode())
    return {r: value(s, "prepwatch_box_alignment_checks_total", result=r) or 0.0 for r in RESULTS}


def outcomes(c: Context) -> dict[str, float]:
    s = parse(generate_latest(c.registry).decode())
    return {o: value(s, "prepwatch_boxes_total", outcome=o) or 0.0
            for o in ("kept", "clipped", "out_of_bounds", "degenerate", "dropped")}


# ---------------------------------------------------------------------------------------
# Probe canvas: the size of the images the job trains on
# ---------------------------------------------------------------------------------------
def _tv_batch(transform, n: int = 4, size: tuple[int, int] = (480, 640), seed: int = 0):
    """Run ``transform`` on n real (3, H, W) images with boxes, as a training loader would."""
    tv_tensors = pytest.importorskip("torchvision.tv_tensors")
    g = torch.Generator().manual_seed(seed)
    h, w = size
    images, targets = [], []
    for _ in range(n):
        image = tv_tensors.Image(torch.rand(3, h, w, generator=g))
        boxes = tv_tensors.BoundingBoxes(
            torch.tensor([[40.0, 30.0, 300.0, 200.0], [350.0, 220.0, 600.0, 460.0]]),
            format="XYXY", canvas_size=(h, w),
        )
        out, target = transform(image, {"boxes": boxes, "labels": torch.tensor([1, 2])})
        images.append(out.as_subclass(torch.Tensor))
        targets.append({"boxes": target["boxes"], "labels": target["labels"], "boxes_in": 2})
    return images, targets


def test_random_crop_320_on_640x480_images_is_probed_not_errored() -> None:
    v2 = pytest.importorskip("torchvision.transforms.v2")
    transform = v2.Compose([v2.RandomCrop(320), v2.RandomHorizontalFlip(), v2.ClampBoundingBoxes()])
    c = ctx()
    monitor = BoxMonitor(c, transform=transform, probe_every=1, probe_trials=3,
                         probe_budget=1.0, sample_every=1)
    images, targets = _tv_batch(transform)
    assert images[0].shape[-2:] == (320, 320)
    for _ in range(4):
        monitor.observe(images, targets)
    got = checks(c)
    assert got["error"] == 0 and c.errors.count("boxes") == 0, got
    assert got["aligned"] >= 8 and got["misaligned"] == 0, got
    # Probes are larger than the crops, and not square, so the crop has room to move.
    width, height = monitor.probe_size
    assert width > 320 and height > 320 and width != height


def test_probes_that_cannot_run_count_as_errors_and_say_how_to_fix(caplog) -> None:
    v2 = pytest.importorskip("torchvision.transforms.v2")
    # Crop 320 then downscale to 160: the observed images are smaller than the crop.
    transform = v2.Compose([v2.RandomCrop(320), v2.Resize((160, 160))])
    c = ctx()
    monitor = BoxMonitor(c, transform=transform, probe_every=1, probe_trials=2,
                         probe_budget=1.0, sample_every=1000)
    images, targets = _tv_batch(transform, n=2)
    with caplog.at_level(logging.WARNING, logger="prepwatch"):
        for _ in range(3):
            monitor.observe(images, targets)
    got = checks(c)
    assert got["error"] == 6 and got["aligned"] + got["misaligned"] + got["inconclusive"] == 0
    hints = [r.message for r in caplog.records if "image_size=" in r.message]
    assert len(hints) == 1 and "result=\"error\"" in hints[0]
    # The explicit override is the fix.
    c2 = ctx()
    fixed = BoxMonitor(c2, transform=transform, image_size=(640, 480), probe_every=1,
                       probe_trials=2, probe_budget=1.0, sample_every=1000)
    for _ in range(3):
        fixed.observe(images, targets)
    assert fixed.probe_size == (640, 480)
    got = checks(c2)
    assert got["error"] == 0 and got["aligned"] >= 4 and got["misaligned"] == 0, got


# ---------------------------------------------------------------------------------------
# Normalized boxes and padded batches
# ---------------------------------------------------------------------------------------
def test_normalized_boxes_out_of_range_are_counted() -> None:
    c = ctx()
    monitor = BoxMonitor(c, sample_every=1, box_format="cxcywh_norm")
    images = torch.rand(2, 3, 480, 640)
    boxes = [
        torch.tensor([[0.5, 0.5, 0.2, 0.2],       # kept
                      [0.9, 0.5, 0.4, 0.2]]),     # x2 = 1.1: out of bounds
        torch.tensor([[0.3, 0.3, 0.0, 0.1]]),     # zero width: degenerate
    ]
    monitor.observe(images, boxes)
    got = outcomes(c)
    assert (got["kept"], got["out_of_bounds"], got["degenerate"]) == (1, 1, 1), got

    c = ctx()
    monitor = BoxMonitor(c, sample_every=1, box_format="xyxy_norm")
    targets = [{"boxes": torch.tensor([[0.1, 0.1, 0.6, 0.5], [0.5, 0.2, 1.3, 0.9]])}]
    monitor.observe(torch.rand(1, 3, 480, 640), targets)
    got = outcomes(c)
    assert (got["kept"], got["out_of_bounds"]) == (1, 1), got
    assert c.errors.count("boxes") == 0


def test_unknown_box_format_names_the_normalized_ones() -> None:
    with pytest.raises(ValueError, match="cxcywh_norm"):
        BoxMonitor(ctx(), box_format="yolo")


def test_padded_batch_checks_boxes_against_each_true_image_size() -> None:
    c = ctx()
    monitor = BoxMonitor(c, sample_every=1)
    images = torch.zeros(2, 3, 480, 640)  # the second image is 300x400, padded
    boxes = [torch.tensor([[10.0, 10.0, 100.0, 100.0]]),
             torch.tensor([[350.0, 10.0, 420.0, 100.0]])]  # x2 = 420 > 400: in the padding
    monitor.observe(images, boxes, image_sizes=[(480, 640), torch.tensor([300, 400])])
    got = outcomes(c)
    assert (got["kept"], got["out_of_bounds"]) == (1, 1), got

    # DETR: cxcywh in [0, 1] relative to the unpadded image.
    c = ctx()
    monitor = BoxMonitor(c, sample_every=1, box_format="cxcywh_norm")
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.9, 0.5, 0.4, 0.2]]),
                "size": torch.tensor([300, 400])}]
    monitor.observe(images[:1], targets, image_sizes=[t["size"] for t in targets])
    got = outcomes(c)
    assert (got["kept"], got["out_of_bounds"]) == (1, 1), got


def test_probe_speaks_normalized_boxes_to_plain_callables() -> None:
    def flip(image, boxes, labels):  # cxcywh in [0, 1]: the centre mirrors to 1 - cx
        out = boxes.clone()
        out[:, 0] = 1.0 - boxes[:, 0]
        return image.flip(-1), out, labels

    def flip_as_pixels(image, boxes, labels):  # the pixel formula on normalized boxes
        out = boxes.clone()
        out[:, 0] = image.shape[-1] - boxes[:, 0]
        return image.flip(-1), out, labels

    good = check_transform(flip, 40, box_format="cxcywh_norm", seed=1)
    assert good.misaligned == 0 and good.aligned == 40
    bad = check_transform(flip_as_pixels, 20, box_format="cxcywh_norm", seed=1)
    assert bad.misaligned == 20


# ---------------------------------------------------------------------------------------
# Slow jobs: probes by wall time as well as by steps
# ---------------------------------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def monotonic(self) -> float:
        return self.now


def _slow_job(monkeypatch, seconds_per_step: float, steps: int) -> dict[str, float]:
    clock = _Clock()
    fake = SimpleNamespace(monotonic=clock.monotonic, perf_counter=time.perf_counter, time=time.time)
    monkeypatch.setattr(boxes_module, "time", fake)
    c = ctx()
    monitor = BoxMonitor(c, transform=gt.healthy_detection_transform(), sample_every=1000)
    images = torch.rand(2, 3, 40, 60)
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 20.0, 20.0]])}] * 2
    for _ in range(steps):
        clock.now += seconds_per_step  # the training step
        monitor.observe(images, targets)
    return checks(c)


@pytest.mark.parametrize("seconds_per_step", [3.0, 60.0])
def test_slow_job_accrues_probe_trials_by_wall_time(monkeypatch, seconds_per_step: float) -> None:
    # Ten minutes of training at 3 s and at 60 s a step: 200 and 10 steps, so
    # probe_every=50 alone gives 8 trials and none.
    got = _slow_job(monkeypatch, seconds_per_step, int(600 / seconds_per_step))
    judged = got["aligned"] + got["misaligned"]
    assert got["error"] == 0 and got["misaligned"] == 0, got
    assert sum(got.values()) >= 60, got
    assert judged >= 20, got  # what PrepwatchBoxesMisaligned needs in its 10 m window
