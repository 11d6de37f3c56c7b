"""``prepwatch demo --fault overaug``: over-augmentation erases a rare, small-object class.

The task (3x32x32, 10 classes, generated on the fly so there is no overfitting):

* classes 0-8 are oriented, coloured stripes (3 colours x 3 angles) under strong pixel
  noise: a global texture, learned gradually, and robust to a few small holes;
* class 9, ``red-0deg+spot``, is rare (4% of the training labels) and is class 0's texture
  plus one small black 4x4 spot somewhere in the image. The spot is all that tells it
  from class 0.

Augmentation is cutout with 4x4 black holes (``RandomErasing`` with a black fill, applied
on the batch in the loop as GPU pipelines do). Its strength rises during the run: two
holes per image, each applied with a probability that ramps from 0 to 1. Cutout holes
both erase the spot and counterfeit it: once most class-0 training images carry a black
square too, a square stops being evidence for class 9, and the model, which truly
trains all along, learns to call the clean ``red-0deg+spot`` images class 0. Its clean
recall falls from its peak to near zero, while the stripes classes keep improving, so
overall clean accuracy still rises. Nothing is injected: the numbers are the model's.

The evaluation set is clean (no cutout) and drawn like the training set.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

NUM_CLASSES = 10
RARE = 9
LOOKALIKE = 0
RARE_SHARE = 0.04
SIZE = 32
STRIPE_AMPLITUDE = 0.35  # against N(0, 1) pixel noise: learned over the whole run
STRIPE_PERIOD = 6.0
SPOT = 4  # the rare class' object and the cutout holes: 4x4 pixels
HOLES = 2
BLACK = (0.0 - 0.45) / 0.25  # a black pixel after the demo's normalization
COLOURS = ("red", "green", "blue")
ANGLES = (0, 60, 120)
CLASS_NAMES = [f"{c}-{a}deg" for c in COLOURS for a in ANGLES] + ["red-0deg+spot"]
_COLOUR_VECTORS = torch.tensor([[1.0, 0.2, -0.5], [-0.5, 1.0, 0.2], [0.2, -0.5, 1.0]])
_ANGLE_RADIANS = torch.tensor([a * math.pi / 180 for a in ANGLES] * 3)
_YY, _XX = torch.meshgrid(torch.arange(float(SIZE)), torch.arange(float(SIZE)), indexing="ij")
BATCH = 64
RAMP_START = 0.3  # share of the run before cutout starts
RAMP_END = 0.6  # share of the run when it reaches full strength
MIN_STEPS_BEFORE_RAMP = 250  # the rare class is learned first (by ~120 steps)
LR = 4e-3


def label_probabilities() -> torch.Tensor:
    p = torch.full((NUM_CLASSES,), (1 - RARE_SHARE) / (NUM_CLASSES - 1))
    p[RARE] = RARE_SHARE
    return p


def _squares(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, SIZE, SIZE) masks of one SPOT x SPOT square at a random place per image."""
    cy = torch.randint(0, SIZE - SPOT + 1, (n, 1, 1), generator=gen)
    cx = torch.randint(0, SIZE - SPOT + 1, (n, 1, 1), generator=gen)
    return (_YY >= cy) & (_YY < cy + SPOT) & (_XX >= cx) & (_XX < cx + SPOT)


def render(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Normalized (n, 3, SIZE, SIZE) images of ``labels``."""
    n = labels.shape[0]
    images = torch.randn(n, 3, SIZE, SIZE, generator=gen)
    texture = torch.where(labels == RARE, torch.tensor(LOOKALIKE), labels)
    angle = _ANGLE_RADIANS[texture].view(n, 1, 1)
    colour = _COLOUR_VECTORS[texture // 3].view(n, 3, 1, 1)
    phase = torch.rand(n, 1, 1, generator=gen) * 2 * math.pi
    along = _XX * torch.cos(angle) + _YY * torch.sin(angle)
    wave = torch.cos(along * (2 * math.pi / STRIPE_PERIOD) + phase)
    images += STRIPE_AMPLITUDE * wave.unsqueeze(1) * colour
    spot = _squares(n, gen) & (labels == RARE).view(n, 1, 1)
    return torch.where(spot.unsqueeze(1), torch.tensor(BLACK), images)


def cutout(images: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """HOLES black SPOT x SPOT holes, each applied with probability ``strength``."""
    if strength <= 0:
        return images
    n = images.shape[0]
    for _ in range(HOLES):
        on = (torch.rand(n, generator=gen) < strength).view(n, 1, 1)
        images = torch.where((_squares(n, gen) & on).unsqueeze(1), torch.tensor(BLACK), images)
    return images


class StripesDataset(Dataset):
    """Batches rendered on demand, deterministic per batch index (a fresh sample each time)."""

    def __init__(self, batches: int, seed: int, batch_size: int = BATCH) -> None:
        self.batches = batches
        self.seed = seed
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        labels = torch.multinomial(label_probabilities(), self.batch_size, replacement=True, generator=gen)
        return render(labels, gen), labels


def eval_set(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed * 7919 + 17)
    labels = torch.multinomial(label_probabilities(), size, replacement=True, generator=gen)
    return render(labels, gen), labels


class Net(nn.Module):
    """Two conv layers, then mean and max pooled features: texture and "is there a spot"."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.head = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))


@dataclass
class Evaluation:
    step: int
    strength: float
    accuracy: float
    rare_recall: float


@dataclass
class Result:
    evaluations: list[Evaluation] = field(default_factory=list)
    steps: int = 0

    def peak(self) -> Evaluation:
        return max(self.evaluations, key=lambda e: (e.rare_recall, -e.step))

    def alert_condition(self, drop: float = 0.10, accuracy_slack: float = 0.02, rise: float = 0.01) -> bool:
        """The alert rule's condition (alerts/class_health.rules.yml) over these evaluations,
        without the noise floor: the rare recall pooled over the last L passes (as
        ClassHealth pools them; equal samples per pass, so a mean) is ``drop`` below the best
        such pool, and the better of the last two accuracies is within ``accuracy_slack`` of
        the best accuracy and ``rise`` above the lowest."""
        from prepwatch.checks.class_health.stats import recent_pool

        if len(self.evaluations) < 2:
            return False
        pools = []
        for i in range(2, len(self.evaluations) + 1):  # all passes of a demo are within 6 h
            last = self.evaluations[max(0, i - recent_pool(i)):i]
            pools.append(sum(e.rare_recall for e in last) / len(last))
        last2 = self.evaluations[-2:]
        accuracy_now = max(e.accuracy for e in last2)
        accuracies = [e.accuracy for e in self.evaluations]
        return (
            max(pools) - pools[-1] > drop
            and accuracy_now >= max(accuracies) - accuracy_slack
            and accuracy_now >= min(accuracies) + rise
        )


def run(
    watch: Any, *, seconds: Optional[float] = None, steps: Optional[int] = None, workers: int = 0,
    seed: int = 0, eval_size: int = 3000, eval_every_steps: Optional[int] = None,
    eval_every_seconds: float = 3.0, ramp_after_steps: int = MIN_STEPS_BEFORE_RAMP,
    on_evaluation: Any = None,
) -> Result:
    """Train for ``seconds`` (strength follows the clock) or ``steps`` (follows the step
    count: deterministic, for tests). Feeds ``watch`` like a user's job would."""
    if (seconds is None) == (steps is None):
        raise ValueError("pass seconds or steps")
    torch.manual_seed(seed)
    health = watch.class_health(
        num_classes=NUM_CLASSES, class_names=CLASS_NAMES, window_seconds=20.0, flush_every_steps=20,
    )
    total_batches = steps if steps is not None else 10**6
    loader = DataLoader(
        StripesDataset(total_batches, seed), batch_size=None, shuffle=False, num_workers=workers,
        persistent_workers=False, prefetch_factor=4 if workers else None,
    )
    eval_images, eval_labels = eval_set(eval_size, seed)
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed + 1)
    result = Result()
    start = time.monotonic()
    ramp_from: Optional[float] = None  # progress at which cutout starts
    next_eval = start + eval_every_seconds
    strength = 0.0
    reported = -1.0
    step = 0
    for images, labels in watch.loader(loader):
        progress = (step / steps) if steps is not None else (time.monotonic() - start) / seconds
        if progress >= 1.0:
            break
        if ramp_from is None and progress >= RAMP_START and step >= ramp_after_steps:
            ramp_from = progress
        if ramp_from is not None:
            strength = min(1.0, (progress - ramp_from) / (RAMP_END - RAMP_START))
        if abs(strength - reported) >= 0.05 or (strength == 1.0 and reported != 1.0):
            watch.class_health().report_augmentation(
                cutout_holes_per_image=HOLES * strength, cutout_hole_px=SPOT
            )
            reported = strength
        for group in optimizer.param_groups:  # cosine decay to 10%: the stripes keep improving
            group["lr"] = LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        model.train()
        logits = model(cutout(images, strength, gen))
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        watch.class_health().train_predictions(logits.detach(), labels)
        step += 1
        due = (step % eval_every_steps == 0) if eval_every_steps else time.monotonic() >= next_eval
        if due:
            result.evaluations.append(_evaluate(model, health, eval_images, eval_labels, step, strength))
            if on_evaluation is not None:
                on_evaluation(result.evaluations[-1])
            next_eval = time.monotonic() + eval_every_seconds
    result.steps = step
    health.flush()
    return result


def _evaluate(model: nn.Module, health: Any, images: torch.Tensor, labels: torch.Tensor,
              step: int, strength: float) -> Evaluation:
    model.eval()
    with torch.no_grad(), health.evaluation("eval"):
        for i in range(0, len(labels), 500):
            health.eval_predictions(model(images[i : i + 500]), labels[i : i + 500])
    recall = health.recall("eval")
    return Evaluation(step, strength, health.accuracy("eval") or 0.0,
                      recall.get(CLASS_NAMES[RARE], float("nan")))


def main(watch: Any, args: argparse.Namespace) -> None:
    seconds = args.seconds if args.seconds and args.seconds > 0 else 90.0
    result = run(watch, seconds=seconds, workers=args.workers, seed=args.seed,
                 eval_every_seconds=max(1.5, min(5.0, seconds / 30)))
    if not result.evaluations:
        print("overaug: the run was too short to evaluate")
        return
    peak, last = result.peak(), result.evaluations[-1]
    print(
        f"overaug: {result.steps} steps; cutout holes/image 0 -> {HOLES * last.strength:.1f}. "
        f"Rare class {CLASS_NAMES[RARE]!r}: clean recall {peak.rare_recall:.0%} at step {peak.step} "
        f"-> {last.rare_recall:.0%}; overall clean accuracy {peak.accuracy:.1%} -> {last.accuracy:.1%}."
    )
    print(f"overaug: PrepwatchRareClassRecallDrop condition holds: {result.alert_condition()}")
