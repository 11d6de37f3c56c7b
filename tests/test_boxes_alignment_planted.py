"""Planted label bugs are caught; their correct counterparts pass with no false alarm.

Plain-torch transforms only (no torchvision): the probe's core must work for any joint
transform. torchvision's v2 transforms are covered in test_boxes_alignment_torchvision.py.
"""

from __future__ import annotations

import pytest
import torch

from prepwatch.checks.boxes.alignment import check_transform
from prepwatch.demo import geometry_transforms as gt

torch.set_num_threads(1)
TRIALS = 150


# -- planted bugs (each is one line away from the correct transform in geometry_transforms)
def rot90_image_only(image, boxes, labels):
    """Boxes not rotated with the image."""
    k = int(torch.randint(1, 4, ()))
    return torch.rot90(image, k, dims=(-2, -1)), boxes, labels


def affine_image_only(image, boxes, labels):
    """A small rotation applied to the pixels; the boxes stay where they were."""
    out, _, _ = gt.RandomAffine(degrees=10, scale=(1.0, 1.0), translate=0.0)(image, boxes, labels)
    return out, boxes, labels


def flip_minus_one(image, boxes, labels):
    """Continuous boxes (x2 exclusive) flipped with the pixel-index formula W - 1 - x."""
    if float(torch.rand(())) < 0.5:
        w = image.shape[-1]
        boxes = torch.stack([w - 1 - boxes[:, 2], boxes[:, 1], w - 1 - boxes[:, 0], boxes[:, 3]], 1)
        image = image.flip(-1)
    return image, boxes, labels


def flip_inclusive_without_minus_one(image, boxes, labels):
    """Pixel-index boxes (x2 inclusive) flipped with the continuous formula W - x."""
    if float(torch.rand(())) < 0.5:
        w = image.shape[-1]
        boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        image = image.flip(-1)
    return image, boxes, labels


def crop_without_clipping(image, boxes, labels):
    """Boxes shifted into the crop but not clipped to it (nor dropped)."""
    h, w = 60, 70
    top = int(torch.randint(0, image.shape[-2] - h + 1, ()))
    left = int(torch.randint(0, image.shape[-1] - w + 1, ()))
    shifted = boxes - torch.tensor([left, top, left, top], dtype=boxes.dtype)
    return image[..., top : top + h, left : left + w], shifted, labels


def resize_image_only(image, boxes, labels):
    out = torch.nn.functional.interpolate(image[None], size=(64, 80), mode="bilinear", antialias=True)[0]
    return out, boxes, labels


def batch_flip(images, boxes, labels):
    """A correct batch-level flip (augmentation applied to a collated batch)."""
    w = images.shape[-1]
    flipped = [torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1) for b in boxes]
    return images.flip(-1), flipped, labels


def batch_flip_boxes_of_next_sample(images, boxes, labels):
    """The same flip, but box lists are paired with the next sample's image (labels too)."""
    images, flipped, labels = batch_flip(images, boxes, labels)
    return images, flipped[1:] + flipped[:1], labels[1:] + labels[:1]


def batch_flip_boxes_shifted_labels_kept(images, boxes, labels):
    images, flipped, labels = batch_flip(images, boxes, labels)
    return images, flipped[1:] + flipped[:1], labels


BUGS = {
    "boxes not rotated (90 degree turns)": (rot90_image_only, {}, {"iou", "out_of_bounds"}, 0.6),
    "boxes not rotated (small angles)": (affine_image_only, {}, {"iou", "offset"}, 0.6),
    # A box touching the border is pushed one pixel outside the image by the same slip.
    "flip W-1-x on continuous boxes": (flip_minus_one, {}, {"offset", "out_of_bounds"}, 0.3),
    "flip W-x on pixel-index boxes": (
        flip_inclusive_without_minus_one, {"box_format": "xyxy_inclusive"},
        {"offset", "out_of_bounds"}, 0.3,
    ),
    "boxes not clipped after a crop": (crop_without_clipping, {}, {"out_of_bounds"}, 0.3),
    "resize applied to the image only": (resize_image_only, {}, {"out_of_bounds", "iou"}, 0.9),
    "boxes and labels of another sample": (
        batch_flip_boxes_of_next_sample, {"call": "batch"}, {"foreign"}, 0.9,
    ),
    "boxes of another sample, labels kept": (
        batch_flip_boxes_shifted_labels_kept, {"call": "batch"}, {"iou"}, 0.9,
    ),
}


@pytest.mark.parametrize("name", list(BUGS))
def test_planted_bug_is_caught(name: str) -> None:
    transform, options, kinds, min_share = BUGS[name]
    report = check_transform(transform, TRIALS, seed=1, **options)
    assert not report.ok
    judged = report.aligned + report.misaligned
    # Every trial the bug touches is caught: a flip with p=0.5 touches half of them.
    assert report.misaligned >= min_share * judged, (name, report.kinds())
    found = {k for k, v in report.kinds().items() if v}
    assert found <= kinds, (name, found)


CORRECT = {
    "flip": (gt.RandomHorizontalFlip(), {}),
    "flip, pixel-index boxes": (gt.RandomHorizontalFlip(inclusive=True), {"box_format": "xyxy_inclusive"}),
    "90 degree turns": (gt.RandomRot90(), {}),
    "rotation, scale and shift": (gt.RandomAffine(degrees=180, scale=(0.6, 1.6), translate=0.15), {}),
    "crop (clipped, empty boxes dropped)": (gt.RandomCrop((60, 70)), {}),
    "resize (down and non-uniform)": (gt.Resize((40, 90)), {}),
    "resize (up)": (gt.Resize((200, 260)), {}),
    "composed with photometric jitter": (gt.healthy_detection_transform(), {}),
    "batch flip": (batch_flip, {"call": "batch"}),
    "numpy images": (
        lambda i, b, lab: (i[:, ::-1].copy(), b * 1, lab), {"image_kind": "numpy", "call": "tuple"},
    ),
}


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_transform_passes_without_false_alarm(name: str) -> None:
    transform, options = CORRECT[name]
    if name == "numpy images":  # a vertical flip in HWC numpy, boxes flipped by hand
        def transform(image, boxes, labels):
            h = image.shape[0]
            flipped = boxes.copy()
            flipped[:, 1], flipped[:, 3] = h - boxes[:, 3], h - boxes[:, 1]
            return image[::-1].copy(), flipped, labels
    report = check_transform(transform, 2 * TRIALS, seed=2, **options)
    assert report.misaligned == 0, [(t.kind, t.note) for t in report.worst(3)]
    assert report.ok
    assert report.aligned >= 0.6 * len(report.trials)


def test_probe_keeps_the_callers_random_stream() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_transform(gt.healthy_detection_transform(), 5)
    assert torch.equal(torch.rand(3), expected)


def test_reports_are_reproducible_for_a_seed() -> None:
    a = check_transform(flip_minus_one, 40, seed=7)
    b = check_transform(flip_minus_one, 40, seed=7)
    assert [t.result for t in a.trials] == [t.result for t in b.trials]
    assert a.misaligned > 0
