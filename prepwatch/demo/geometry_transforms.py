"""Small joint image+box and clip transforms in plain torch, for demos and examples.

They follow the call form ``fn(image, boxes, labels) -> (image, boxes, labels)`` with
float (C, H, W) images and continuous xyxy boxes (pixel j covers [j, j+1)), so they run
without torchvision. Each is correct; the fault demos wrap them with the bug they show.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Compose:
    def __init__(self, transforms: Sequence[Callable[..., Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> Sample:
        for t in self.transforms:
            image, boxes, labels = t(image, boxes, labels)
        return image, boxes, labels


class RandomHorizontalFlip:
    """Mirror left-right; ``inclusive=True`` for boxes whose x2 is the last covered column."""

    def __init__(self, p: float = 0.5, *, inclusive: bool = False) -> None:
        self.p = p
        self.inclusive = inclusive

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> Sample:
        if float(torch.rand(())) >= self.p:
            return image, boxes, labels
        width = image.shape[-1] - (1 if self.inclusive else 0)
        flipped = boxes.clone()
        flipped[:, 0] = width - boxes[:, 2]
        flipped[:, 2] = width - boxes[:, 0]
        return image.flip(-1), flipped, labels


class RandomRot90:
    """Turn by a random multiple of 90 degrees (counter-clockwise), boxes with it."""

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> Sample:
        k = int(torch.randint(0, 4, ()))
        for _ in range(k):
            width = image.shape[-1]
            image = torch.rot90(image, 1, dims=(-2, -1))
            # (x, y) -> (y, W - x) for a counter-clockwise quarter turn
            boxes = torch.stack([boxes[:, 1], width - boxes[:, 2], boxes[:, 3], width - boxes[:, 0]], 1)
        return image, boxes, labels


class RandomAffine:
    """Rotate, scale and translate about the image centre (bilinear); boxes become the
    enclosing box of their transformed corners, clamped to the image, as torchvision does."""

    def __init__(
        self, degrees: float = 30.0, scale: tuple[float, float] = (0.8, 1.2),
        translate: float = 0.1,
    ) -> None:
        self.degrees = degrees
        self.scale = scale
        self.translate = translate

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> Sample:
        height, width = image.shape[-2:]
        angle = math.radians(self.degrees * (2 * float(torch.rand(())) - 1))
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * float(torch.rand(()))
        tx = self.translate * width * (2 * float(torch.rand(())) - 1)
        ty = self.translate * height * (2 * float(torch.rand(())) - 1)
        m = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
                         dtype=torch.float64) * s
        t = torch.tensor([tx, ty], dtype=torch.float64)
        c = torch.tensor([width / 2, height / 2], dtype=torch.float64)
        # affine_grid maps output to input in normalised coordinates (-1..1 spans the
        # pixel edges with align_corners=False): n_in = D^-1 M^-1 D n_out - D^-1 M^-1 t.
        d = torch.diag(c)
        m_inv = torch.linalg.inv(m)
        theta = torch.cat([torch.linalg.inv(d) @ m_inv @ d, -(torch.linalg.inv(d) @ m_inv @ t)[:, None]], 1)
        grid = torch.nn.functional.affine_grid(
            theta[None].float(), [1, image.shape[0], height, width], align_corners=False,
        )
        out = torch.nn.functional.grid_sample(
            image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False,
        )[0]
        corners = boxes.double()[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 4, 2)
        moved = (corners - c) @ m.T + c + t
        new = torch.cat([moved.min(dim=1).values, moved.max(dim=1).values], dim=1)
        new[:, 0::2] = new[:, 0::2].clamp(0, width)
        new[:, 1::2] = new[:, 1::2].clamp(0, height)
        return out, new.to(boxes.dtype), labels


class RandomCrop:
    """Crop a random ``size`` (h, w) window; clip boxes to it and drop those left empty."""

    def __init__(self, size: tuple[int, int], *, min_size: float = 1.0) -> None:
        self.size = size
        self.min_size = min_size

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> Sample:
        h, w = self.size
        height, width = image.shape[-2:]
        top = int(torch.randint(0, height - h + 1, ()))
        left = int(torch.randint(0, width - w + 1, ()))
        image = image[..., top : top + h, left : left + w]
        shifted = boxes - torch.tensor([left, top, left, top], dtype=boxes.dtype)
        shifted[:, 0::2] = shifted[:, 0::2].clamp(0, w)
        shifted[:, 1::2] = shifted[:, 1::2].clamp(0, h)
        keep = ((shifted[:, 2] - shifted[:, 0]) >= self.min_size) & (
            (shifted[:, 3] - shifted[:, 1]) >= self.min_size
        )
        return image, shifted[keep], labels[keep]


class Resize:
    """Resize to ``size`` (h, w) with antialiased bilinear interpolation; scale the boxes."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> Sample:
        height, width = image.shape[-2:]
        h, w = self.size
        out = torch.nn.functional.interpolate(
            image[None].float(), size=(h, w), mode="bilinear", align_corners=False, antialias=True,
        )[0]
        scale = torch.tensor([w / width, h / height, w / width, h / height], dtype=boxes.dtype)
        return out, boxes * scale, labels


class ColorJitter:
    """Brightness and contrast by random factors; geometry untouched."""

    def __init__(self, brightness: float = 0.3, contrast: float = 0.3) -> None:
        self.brightness = brightness
        self.contrast = contrast

    def factors(self) -> tuple[float, float]:
        b = 1.0 + self.brightness * (2 * float(torch.rand(())) - 1)
        c = 1.0 + self.contrast * (2 * float(torch.rand(())) - 1)
        return b, c

    @staticmethod
    def apply(image: torch.Tensor, b: float, c: float) -> torch.Tensor:
        """Brightness then contrast around the (frame's own) mean grey, clamped like torchvision."""
        out = (image * b).clamp(0, 1)
        grey = out.mean(dim=-3, keepdim=True).mean(dim=(-2, -1), keepdim=True)
        return (c * out + (1 - c) * grey).clamp(0, 1)

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> Sample:
        return self.apply(image, *self.factors()), boxes, labels


def clip_jitter(brightness: float = 0.3, contrast: float = 0.3, *, per_frame: bool = False):
    """A clip transform (T, C, H, W) -> same: one jitter for the clip, or one per frame."""
    jitter = ColorJitter(brightness, contrast)

    def transform(clip: torch.Tensor) -> torch.Tensor:
        if per_frame:
            return torch.stack([jitter.apply(frame, *jitter.factors()) for frame in clip])
        b, c = jitter.factors()
        return torch.stack([jitter.apply(frame, b, c) for frame in clip])

    return transform


def healthy_detection_transform(size: tuple[int, int] = (48, 64)) -> Compose:
    """Flip, quarter turns, crop, resize and photometric jitter: all boxes follow."""
    return Compose([
        RandomHorizontalFlip(), RandomRot90(), RandomCrop((56, 56)), Resize(size),
        ColorJitter(0.2, 0.2),
    ])
