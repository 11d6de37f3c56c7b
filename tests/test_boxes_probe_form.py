"""The box probe detects what a transform accepts (plain or tv_tensors, float or uint8).

Plain callables wrapping torchvision v2 transforms that read ``boxes.canvas_size`` (or
call v2 functionals that need the metadata, or uint8 images) raised inside the probe with
its old defaults, so a real misalignment showed as "probe failing". With the defaults
untouched, the probe must now find the form, say which, and judge the transform.
"""

from __future__ import annotations

import logging

import pytest
import torch
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

pytest.importorskip("torchvision")
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402

from prepwatch.checks.boxes import BoxMonitor  # noqa: E402
from prepwatch.checks.boxes.alignment import check_transform  # noqa: E402
from prepwatch.context import Context  # noqa: E402

torch.set_num_threads(1)


def flip_off_by_one(image, boxes):
    """Needs tv_tensors: reads the canvas from the boxes (AttributeError on a plain tensor)."""
    image = F.horizontal_flip(image)
    w = boxes.canvas_size[1]
    flipped = torch.stack([w - 1 - boxes[:, 2], boxes[:, 1], w - 1 - boxes[:, 0], boxes[:, 3]], 1)
    return image, tv_tensors.wrap(flipped, like=boxes)


def rotate_image_only(image, boxes, labels):
    """Needs tv_tensors: clamps boxes with the v2 functional, which wants their metadata."""
    angle = float(torch.empty(()).uniform_(-30, 30))
    return F.rotate(image, angle), F.clamp_bounding_boxes(boxes), labels


_jpeg_flip = v2.Compose([v2.JPEG(quality=(60, 90)), v2.RandomHorizontalFlip(p=1.0)])


def jpeg_flip_shifted(image, boxes):
    """Needs uint8 images (JPEG re-encoding) and tv_tensors (canvas); boxes 3 px off."""
    assert boxes.canvas_size[1] > 0
    image, boxes = _jpeg_flip(image, boxes)
    return image, tv_tensors.wrap(boxes + torch.tensor([3.0, 0.0, 3.0, 0.0]), like=boxes)


def correct_wrapped_flip(image, boxes):
    """Correct: v2 flip, and a sanity read of the canvas."""
    assert boxes.canvas_size[0] > 0
    return v2.RandomHorizontalFlip(p=1.0)(image, boxes)


def correct_plain_flip(image, boxes, labels):
    """Correct on plain float tensors: must keep the form it always had."""
    w = image.shape[-1]
    flipped = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    return image.flip(-1), flipped, labels


BUGGY = {
    "flip off by one (canvas_size)": flip_off_by_one,
    "rotation, boxes only clamped": rotate_image_only,
    "JPEG + flip, 3 px shift (uint8)": jpeg_flip_shifted,
}


@pytest.mark.parametrize("name", list(BUGGY))
def test_defaults_find_the_form_and_catch_the_bug(name: str) -> None:
    report = check_transform(BUGGY[name], 40, seed=3)  # no tv_tensors=, no image_kind=
    assert report.form is not None and report.form.tv_tensors
    assert report.form.how == "detected" and report.form.refused
    assert report.misaligned >= 0.3 * (report.aligned + report.misaligned), report.kinds()


def test_uint8_form_is_found_when_floats_are_refused() -> None:
    report = check_transform(jpeg_flip_shifted, 8, seed=1)
    assert report.form is not None and report.form.image_kind == "uint8"


def test_correct_transforms_stay_aligned_and_plain_ones_keep_their_form() -> None:
    wrapped = check_transform(correct_wrapped_flip, 40, seed=2)
    assert wrapped.ok and wrapped.misaligned == 0 and wrapped.aligned > 20
    assert wrapped.form is not None and wrapped.form.tv_tensors
    plain = check_transform(correct_plain_flip, 40, seed=2)
    assert plain.ok and plain.misaligned == 0
    assert plain.form is not None and not plain.form.tv_tensors and plain.form.how == "default"
    given = check_transform(correct_wrapped_flip, 4, seed=2, tv_tensors=True, image_kind="tensor")
    assert given.form is not None and given.form.how == "given"


def test_a_transform_refusing_every_form_names_them() -> None:
    def broken(image, boxes):
        raise KeyError("no such thing")

    with pytest.raises(RuntimeError, match="every input form") as info:
        check_transform(broken, 2)
    assert "tv_tensors" in str(info.value) and "uint8" in str(info.value)


def _samples(ctx: Context) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(ctx.registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_monitor_says_which_form_and_counts_misaligned_not_error(caplog) -> None:
    ctx = Context.create()
    monitor = BoxMonitor(ctx, transform=flip_off_by_one, probe_every=1, probe_trials=8,
                         probe_budget=1.0)
    images = torch.rand(2, 3, 64, 80)
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    with caplog.at_level(logging.INFO, logger="prepwatch"):
        for _ in range(3):
            monitor.observe(images, targets)
    s = _samples(ctx)
    info = {labels: v for (name, labels), v in s.items() if name == "prepwatch_box_probe_form_info"}
    assert info == {(("how", "detected"), ("image_kind", "tensor"), ("tv_tensors", "true")): 1.0}
    checks = {dict(labels)["result"]: v for (name, labels), v in s.items()
              if name == "prepwatch_box_alignment_checks_total"}
    assert checks["error"] == 0 and checks["misaligned"] > 0
    lines = [r.getMessage() for r in caplog.records if "hands the transform" in r.getMessage()]
    assert len(lines) == 1 and "tv_tensors.Image" in lines[0] and "AttributeError" in lines[0]
    monitor.close()
