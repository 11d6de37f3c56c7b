"""Synthetic photos and a small CNN: evidence for the normalization guard in seconds.

Images are raw RGB uint8 scenes: a textured, tinted background with a gradient,
one coloured object whose shape and colour make the class (5 shapes x red/blue),
then illumination (gain and black level, clipped like a sensor: dark, bright and
saturated images) and contrast. ``cast`` tints the whole scene, like a light
source or a stain does in a real domain; with a strong cast the red and blue
channels are told apart by statistics alone, with ``cast=None`` they are not.
``theme`` narrows the illumination to make batches of one kind of content.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from prepwatch.checks.inputs.declared import Declared
from prepwatch.checks.inputs.faults import correct

WARM = (1.0, 0.8, 0.55)
CLASSES = 10


@dataclass(frozen=True)
class Theme:
    gain: tuple[float, float]        # log-uniform illumination gain
    black: tuple[float, float]       # black-level shift before clipping
    contrast: tuple[float, float]


THEMES = {
    "mixed": Theme((0.35, 2.0), (-0.06, 0.06), (0.35, 1.2)),
    "dark": Theme((0.35, 0.6), (-0.06, 0.0), (0.6, 1.2)),
    "bright": Theme((1.4, 2.0), (0.0, 0.06), (0.6, 1.2)),
    "low_contrast": Theme((0.8, 1.2), (-0.02, 0.02), (0.35, 0.5)),
    "normal": Theme((0.8, 1.3), (-0.05, 0.03), (0.8, 1.1)),
}


def make_scenes(
    n: int, seed: int, *, theme: str = "mixed", cast: tuple[float, float, float] | None = WARM,
    size: int = 32, labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` raw uint8 images ``(n, 3, size, size)`` and their int64 labels."""
    g = torch.Generator().manual_seed(seed)
    th = THEMES[theme]

    def uni(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    y = labels.clone() if labels is not None else torch.randint(0, CLASSES, (n,), generator=g)
    shape_id, colour_id = y % 5, y // 5
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    # background: grey level, tint, gradient, smooth texture
    base = uni(0.3, 0.7, n, 1, 1, 1) + uni(-0.08, 0.08, n, 3, 1, 1)
    angle = uni(0, 2 * math.pi, n, 1, 1, 1)
    grad = (torch.cos(angle) * (xx - 0.5) + torch.sin(angle) * (yy - 0.5)) * uni(0, 0.5, n, 1, 1, 1)
    tex = torch.nn.functional.interpolate(
        torch.rand(n, 1, 8, 8, generator=g), size=(size, size), mode="bilinear",
        align_corners=False,
    )
    img = base + grad + 0.2 * (tex - 0.5)
    # object: shape from the class, random place and scale
    cx, cy = uni(0.3, 0.7, n, 1, 1), uni(0.3, 0.7, n, 1, 1)
    r = uni(0.13, 0.24, n, 1, 1)
    dx, dy = xx - cx, yy - cy
    dist = torch.sqrt(dx**2 + dy**2)
    masks = torch.stack((
        dist < r,                                                   # disk
        (dx.abs() < r) & (dy.abs() < r),                            # square
        (dx.abs() < 1.6 * r) & (dy.abs() < 0.45 * r),               # horizontal bar
        (dx.abs() < 0.45 * r) & (dy.abs() < 1.6 * r),               # vertical bar
        (dist < r * 1.15) & (dist > r * 0.65),                      # ring
    ), dim=1)  # (n, 5, s, s)
    mask = masks[torch.arange(n), shape_id].unsqueeze(1).float()
    red = torch.tensor([0.9, 0.2, 0.15]).view(1, 3, 1, 1)
    blue = torch.tensor([0.15, 0.3, 0.95]).view(1, 3, 1, 1)
    colour = torch.where(colour_id.view(n, 1, 1, 1) == 0, red, blue)
    colour = colour + uni(-0.08, 0.08, n, 3, 1, 1)
    img = img * (1 - mask) + colour * mask
    if cast is not None:
        img = img * torch.tensor(cast).view(1, 3, 1, 1)
    # contrast around the image mean, then illumination and sensor clipping
    mean = img.mean(dim=(1, 2, 3), keepdim=True)
    img = mean + (img - mean) * uni(*th.contrast, n, 1, 1, 1)
    gain = torch.exp(uni(math.log(th.gain[0]), math.log(th.gain[1]), n, 1, 1, 1))
    img = img * gain + uni(*th.black, n, 1, 1, 1)
    img = img + 0.02 * torch.randn(img.shape, generator=g)  # sensor noise
    raw = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return raw, y


class SceneNet(nn.Module):
    """Three small conv blocks and a linear head: ~85-90% on clean scenes in ~5 s of CPU."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def train_scene_model(
    raw: torch.Tensor, labels: torch.Tensor, declared: Declared, *, seconds: float = 6.0,
    epochs: int = 5, batch_size: int = 64, seed: int = 0,
    on_batch: Callable[[torch.Tensor], None] | None = None,
    wrap: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> SceneNet:
    """Train on correctly normalized scenes for ``epochs`` or ``seconds``, whichever is first.

    ``on_batch(x)`` sees every training batch as the model receives it (to record
    the contract); ``wrap`` wraps each epoch's batches (e.g. ``watch.loader``).
    """
    torch.manual_seed(seed)
    model = SceneNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    deadline = time.monotonic() + seconds
    g = torch.Generator().manual_seed(seed)

    def epoch() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(raw.shape[0], generator=g)
        for i in range(0, raw.shape[0], batch_size):
            idx = order[i: i + batch_size]
            x = correct(raw[idx], declared)
            if torch.rand(1, generator=g).item() < 0.5:  # flip: the only augmentation
                x = x.flip(3)
            yield x, labels[idx]

    model.train()
    for _ in range(epochs):
        for x, y in (wrap(epoch()) if wrap is not None else epoch()):
            if on_batch is not None:
                on_batch(x)
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if time.monotonic() > deadline:
            break
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    hits = 0
    for i in range(0, x.shape[0], batch):
        hits += int((model(x[i: i + batch]).argmax(1) == labels[i: i + batch]).sum())
    return hits / max(1, x.shape[0])


def varied_batches(count: int, seed: int, *, cast: tuple[float, float, float] | None = WARM,
                   sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)):  # noqa: ANN201
    """``count`` raw batches of varied content: every theme, batch sizes 1-64, and one
    batch in five of a single class. Yields ``(theme, raw, labels)``."""
    g = torch.Generator().manual_seed(seed)
    themes = list(THEMES)
    for i in range(count):
        theme = themes[int(torch.randint(0, len(themes), (1,), generator=g))]
        n = sizes[int(torch.randint(0, len(sizes), (1,), generator=g))]
        labels = None
        if torch.rand(1, generator=g).item() < 0.2:
            labels = torch.full((n,), int(torch.randint(0, CLASSES, (1,), generator=g)))
        raw, y = make_scenes(n, seed * 100_003 + i, theme=theme, cast=cast, labels=labels)
        yield theme, raw, y


@dataclass
class EvidenceRow:
    """One serving mistake measured on a trained model and checked by the guard."""

    mistake: str
    description: str
    expected: str | None
    accuracy: float
    batches: int
    flagged: int            # batches with any violation
    named: int              # batches whose violations include the expected kind
    kinds: dict[str, int]   # kind -> batches

    def line(self, clean: float) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items())) or "none"
        return (f"{self.mistake:17s} acc {self.accuracy:6.1%} (drop {clean - self.accuracy:+6.1%})"
                f"  expected {self.expected or '-':14s} flagged {self.flagged}/{self.batches}"
                f"  kinds: {kinds}")


@torch.no_grad()
def evidence(
    model: nn.Module, guard, declared: Declared, raw: torch.Tensor,  # noqa: ANN001
    labels: torch.Tensor, batch: int = 64,
) -> tuple[float, list[EvidenceRow]]:
    """Clean accuracy, then each known mistake: accuracy of the model fed as a lenient
    server would, and what ``guard(served_batch)`` said about each batch."""
    from prepwatch.checks.inputs.faults import MISTAKES

    clean = accuracy(model, correct(raw, declared), labels)
    rows = []
    for name, mistake in MISTAKES.items():
        hits = flagged = named = 0
        kinds: dict[str, int] = {}
        batches = 0
        expected = mistake.expected_kind(declared)
        for i in range(0, raw.shape[0], batch):
            served = mistake.make(raw[i: i + batch], declared)
            result = guard(served)
            batches += 1
            flagged += int(not result.ok)
            named += int(expected in result.kinds)
            for kind in result.kinds:
                kinds[kind] = kinds.get(kind, 0) + 1
            out = model(mistake.model_input(served))
            hits += int((out.argmax(1) == labels[i: i + batch]).sum())
        rows.append(EvidenceRow(name, mistake.description, expected, hits / raw.shape[0],
                                batches, flagged, named, kinds))
    return clean, rows
