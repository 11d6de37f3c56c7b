"""The alignment probe on torchvision.transforms.v2 with tv_tensors.BoundingBoxes.

The main real-world case. Skipped where torchvision is not installed (it is optional:
prepwatch itself never imports it unless the transform is a torchvision one).
"""

from __future__ import annotations

import pytest
import torch

tv = pytest.importorskip("torchvision")
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402

from prepwatch.checks.boxes.alignment import check_transform  # noqa: E402

torch.set_num_threads(1)
BILINEAR = v2.InterpolationMode.BILINEAR
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])

CORRECT = {
    "horizontal flip": v2.RandomHorizontalFlip(),
    "rotation (nearest, default)": v2.RandomRotation(180),
    "rotation (bilinear)": v2.RandomRotation(30, interpolation=BILINEAR),
    "random crop": v2.RandomCrop((64, 80)),
    "random resized crop": v2.RandomResizedCrop((64, 64), antialias=True),
    "resize": v2.Resize((70, 90)),
    "affine": v2.RandomAffine(20, translate=(0.1, 0.1), scale=(0.7, 1.3), shear=10),
    "composed (detection recipe)": v2.Compose([
        v2.RandomPhotometricDistort(p=1.0),
        v2.RandomZoomOut(p=0.5),
        v2.RandomIoUCrop(),
        v2.RandomHorizontalFlip(),
        v2.Resize((96, 128)),
        v2.SanitizeBoundingBoxes(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(*IMAGENET),
    ]),
}


@pytest.mark.parametrize("name", list(CORRECT))
def test_torchvision_transforms_pass_without_false_alarm(name: str) -> None:
    report = check_transform(CORRECT[name], 150, seed=3)
    assert report.misaligned == 0, [(t.kind, t.note) for t in report.worst(3)]
    assert report.ok


def test_uint8_and_pil_inputs() -> None:
    t = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomRotation(20), v2.ColorJitter(0.4, 0.4, 0.4, 0.1)])
    for kind in ("uint8", "pil"):
        report = check_transform(t, 60, image_kind=kind, seed=4)
        assert report.misaligned == 0 and report.ok, kind


def rotate_image_only(image, target):
    """The classic: rotate the pixels with the functional API, forget the boxes."""
    angle = float(torch.empty(()).uniform_(-30, 30))
    return F.rotate(image, angle), target


# Boxes handed to v2 as a plain tensor are passed through untouched: only the image flips.
plain_tensor_boxes = v2.RandomHorizontalFlip(p=1.0)


def unwrapped_boxes(image, boxes, labels):
    return plain_tensor_boxes(image.as_subclass(torch.Tensor), boxes, labels)


def flip_off_by_one(image, target):
    image = F.horizontal_flip(image)
    b = target["boxes"]
    w = b.canvas_size[1]
    flipped = torch.stack([w - 1 - b[:, 2], b[:, 1], w - 1 - b[:, 0], b[:, 3]], 1)
    target = dict(target, boxes=tv_tensors.wrap(flipped, like=b))
    return image, target


def crop_unclamped(image, target):
    """A crop that turns clamping off (clamping_mode=None) and forgets to clip."""
    b = target["boxes"]
    unclamped = tv_tensors.BoundingBoxes(
        b.as_subclass(torch.Tensor), format=b.format, canvas_size=b.canvas_size, clamping_mode=None,
    )
    top, left = int(torch.randint(0, 30, ())), int(torch.randint(0, 40, ()))
    return F.crop(image, top, left, 60, 80), dict(target, boxes=F.crop(unclamped, top, left, 60, 80))


def resize_image_only(image, target):
    return F.resize(image, [48, 64]), target


BUGS = {
    "rotation: boxes not rotated": (rotate_image_only, {"call": "dict", "tv_tensors": True}),
    "boxes passed as a plain tensor": (unwrapped_boxes, {"call": "tuple"}),
    "flip off by one": (flip_off_by_one, {"call": "dict", "tv_tensors": True}),
    "crop without clipping": (crop_unclamped, {"call": "dict", "tv_tensors": True}),
    "resize applied to the image only": (resize_image_only, {"call": "dict", "tv_tensors": True}),
}


@pytest.mark.parametrize("name", list(BUGS))
def test_torchvision_planted_bugs_are_caught(name: str) -> None:
    transform, options = BUGS[name]
    report = check_transform(transform, 80, seed=5, **options)
    assert not report.ok
    assert report.misaligned >= 0.3 * (report.aligned + report.misaligned), report.kinds()
