"""BoxMonitor on the training stream: sanity counts, online probes, overlays, failure paths."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import torch
from helpers import parse
from PIL import Image
from prometheus_client import generate_latest

from prepwatch.checks.boxes import monitor as boxes_module
from prepwatch.checks.boxes.monitor import BoxMonitor
from prepwatch.context import Context
from prepwatch.demo import geometry_transforms as gt
from prepwatch.identity import Identity
from prepwatch.watch import Watch

torch.set_num_threads(1)


def ctx() -> Context:
    return Context.create(Identity(run="job", rank=0))


def samples(c: Context) -> dict:
    return parse(generate_latest(c.registry).decode())


def val(s: dict, name: str, **labels: str) -> float:
    return s[(name, tuple(sorted(labels.items())))]


def batch(n: int = 4):
    images = torch.rand(n, 3, 40, 60)
    targets = []
    for _ in range(n):
        targets.append({
            "boxes": torch.tensor([
                [5.0, 5.0, 20.0, 20.0],      # kept
                [0.0, 10.0, 15.0, 40.0],     # touches the border: clipped
                [50.0, 30.0, 70.0, 39.0],    # x2 = 70 > 60: out of bounds
                [30.0, 12.0, 30.0, 25.0],    # zero width: degenerate
            ]),
            "labels": torch.tensor([1, 2, 3, 4]),
            "boxes_in": 6,                  # two boxes were dropped by the augmentation
        })
    return images, targets


def test_outcomes_are_pre_created_and_counted_on_sampled_steps() -> None:
    c = ctx()
    monitor = BoxMonitor(c, sample_every=2)
    s = samples(c)
    for outcome in ("kept", "clipped", "out_of_bounds", "degenerate", "dropped"):
        assert val(s, "prepwatch_boxes_total", outcome=outcome) == 0
    for kind in ("iou", "offset", "out_of_bounds", "foreign", "phantom"):
        assert val(s, "prepwatch_box_misalignments_total", kind=kind) == 0
    images, targets = batch()
    for _ in range(6):  # steps 2, 4, 6 are sampled
        monitor.observe(images, targets)
    s = samples(c)
    for outcome, per_batch in (("kept", 4), ("clipped", 4), ("out_of_bounds", 4),
                               ("degenerate", 4), ("dropped", 8)):
        assert val(s, "prepwatch_boxes_total", outcome=outcome) == 3 * per_batch, outcome


def test_box_lists_labels_and_formats() -> None:
    c = ctx()
    monitor = BoxMonitor(c, sample_every=1, box_format="xywh")
    images = [torch.rand(3, 30, 30), torch.rand(3, 50, 20)]
    boxes = [torch.tensor([[1.0, 1.0, 10.0, 10.0]]), torch.tensor([[5.0, 5.0, 20.0, 10.0]])]
    monitor.observe(images, boxes, [torch.tensor([0]), torch.tensor([1])], boxes_in=[1, 3])
    s = samples(c)
    # xywh: the second box ends at x=25 on a 20 px wide image.
    assert val(s, "prepwatch_boxes_total", outcome="kept") == 1
    assert val(s, "prepwatch_boxes_total", outcome="out_of_bounds") == 1
    assert val(s, "prepwatch_boxes_total", outcome="dropped") == 2


def test_bad_input_is_counted_never_raised(caplog) -> None:
    c = ctx()
    monitor = BoxMonitor(c, sample_every=1)
    with caplog.at_level(logging.WARNING, logger="prepwatch"):
        monitor.observe(torch.rand(2, 3, 8, 8), [torch.zeros(1, 4)])  # 2 images, 1 box set
        monitor.observe(torch.rand(2, 3, 8, 8), "not boxes")
    assert c.errors.count("boxes") == 2
    assert sum("boxes failed" in r.message for r in caplog.records) == 1  # logged once


def test_online_probe_records_alignment_and_keeps_the_job_rng() -> None:
    c = ctx()
    monitor = BoxMonitor(c, transform=gt.healthy_detection_transform(), probe_every=3,
                         probe_trials=2, probe_budget=1.0, sample_every=1000)
    images, targets = batch()
    torch.manual_seed(0)
    expected = torch.rand(5)
    torch.manual_seed(0)
    for _ in range(9):
        monitor.observe(images, targets)
    assert torch.equal(torch.rand(5), expected)  # probes drew from their own generator
    s = samples(c)
    checks = sum(val(s, "prepwatch_box_alignment_checks_total", result=r)
                 for r in ("aligned", "misaligned", "inconclusive"))
    assert checks == 6  # steps 3, 6, 9 x 2 trials
    assert val(s, "prepwatch_box_alignment_checks_total", result="misaligned") == 0
    assert val(s, "prepwatch_box_alignment_iou_count") >= 1
    assert val(s, "prepwatch_box_check_seconds_total", part="probe") > 0


def test_online_probe_flags_a_buggy_transform() -> None:
    def flip_minus_one(image, boxes, labels):
        w = image.shape[-1]
        flipped = torch.stack([w - 1 - boxes[:, 2], boxes[:, 1], w - 1 - boxes[:, 0], boxes[:, 3]], 1)
        return image.flip(-1), flipped, labels

    c = ctx()
    monitor = BoxMonitor(c, transform=flip_minus_one, probe_trials=8)
    report = monitor.probe()
    assert report is not None and report.misaligned >= 6
    s = samples(c)
    assert val(s, "prepwatch_box_alignment_checks_total", result="misaligned") == report.misaligned
    assert val(s, "prepwatch_box_misalignments_total", kind="offset") >= 1
    # The error histogram puts them at one pixel.
    assert val(s, "prepwatch_box_alignment_error_pixels_bucket", le="0.75") < val(
        s, "prepwatch_box_alignment_error_pixels_bucket", le="1.0")


def test_probe_time_budget_spaces_probes_out() -> None:
    """A probe that took t seconds is followed by t * (1/budget - 1) without one: counted in
    probes, not summed in seconds (a first probe's one-time costs only push the next further)."""
    calls: list[float] = []

    def slow(image, boxes, labels):
        calls.append(time.monotonic())
        time.sleep(0.1)
        return image, boxes, labels

    c = ctx()
    monitor = BoxMonitor(c, transform=slow, probe_every=1, probe_trials=1, probe_budget=0.05)
    images, targets = batch(1)
    monitor.observe(images, targets)
    first = len(calls)
    assert first >= 1  # probe_every=1: the first step probes
    start = time.monotonic()
    while time.monotonic() - start < 1.0:  # the next probe is >= 1.9 s away
        monitor.observe(images, targets)
    assert len(calls) == first
    s = samples(c)
    assert val(s, "prepwatch_box_check_seconds_total", part="probe") >= 0.1 * first


def test_overlays_keep_the_last_k_and_latest(tmp_path: Path) -> None:
    c = ctx()
    art = tmp_path / "job" / "rank0"
    monitor = BoxMonitor(c, art, overlay_every=2, overlay_keep=3, sample_every=1000,
                         class_names=["cat", "dog", "car", "bus", "van"])
    images, targets = batch()
    for _ in range(12):
        monitor.observe(images, targets)
        monitor.flush()  # wait for the writer so none is skipped
    monitor.close()
    files = sorted(p.name for p in (art / "overlays").glob("overlay-*.png"))
    assert len(files) == 3
    assert files[-1].endswith("step00000012.png")
    with Image.open(art / "overlays" / "latest.png") as latest:
        assert latest.size[0] > 0 and latest.format == "PNG"
    assert not list((art / "overlays").glob(".tmp-*"))
    s = samples(c)
    assert val(s, "prepwatch_box_overlays_total") == 6
    assert val(s, "prepwatch_overlays_available") == 1
    assert val(s, "prepwatch_box_overlay_info", path="/artifacts/job/rank0/overlays/latest.png") == 1
    assert val(s, "prepwatch_box_overlay_last_timestamp_seconds") == pytest.approx(time.time(), abs=60)


def test_overlay_timestamp_is_absent_until_one_is_written() -> None:
    s = samples(ctx_with_monitor := ctx())
    BoxMonitor(ctx_with_monitor)
    s = samples(ctx_with_monitor)
    assert ("prepwatch_box_overlay_last_timestamp_seconds", ()) not in s


def test_without_pillow_overlays_switch_off_with_one_line(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(boxes_module, "pillow_available", lambda: False)
    c = ctx()
    with caplog.at_level(logging.WARNING, logger="prepwatch"):
        monitor = BoxMonitor(c, tmp_path, overlay_every=1)
    assert monitor.overlay_dir is None
    assert sum("Pillow" in r.message for r in caplog.records) == 1
    images, targets = batch()
    monitor.observe(images, targets)
    s = samples(c)
    assert val(s, "prepwatch_overlays_available") == 0
    assert c.errors.count("boxes") == 0


def test_setup_errors_name_the_fix() -> None:
    c = ctx()
    with pytest.raises(ValueError, match="state directory"):
        BoxMonitor(c, None, overlay_every=10)
    with pytest.raises(ValueError, match="probe_every"):
        BoxMonitor(c, probe_every=0)
    with pytest.raises(ValueError, match="box_format"):
        BoxMonitor(c, box_format="yolo")
    with pytest.raises(TypeError, match="call="):
        BoxMonitor(c, transform=lambda image: image)


def test_watch_boxes_builds_one_monitor_with_the_artifacts_dir(tmp_path: Path) -> None:
    c = ctx()
    watch = Watch(c, None, tmp_path / "job" / "rank0")
    monitor = watch.boxes(overlay_every=5)
    assert monitor is watch.boxes()
    assert monitor.overlay_dir == tmp_path / "job" / "rank0" / "overlays"
    with pytest.raises(ValueError, match="already configured"):
        watch.boxes(sample_every=3)
    watch.stop()
