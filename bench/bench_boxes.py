"""Hot-path cost of the box checks (and the clip measurement) per training batch.

    python bench/bench_boxes.py [--quick]

What a loop pays per batch for ``boxes.observe(images, targets)``, measured against the
same loop without it, alternately in one process (bench.common.alternate), for:

- ``observe_default``: defaults (sanity every 10th batch, no transform, no overlays):
  the cost a job pays all the time;
- ``observe_every_batch``: sanity on every batch (the price of one sampled check);
- ``observe_with_probe``: defaults plus the online alignment probe of a transform
  (2 trials every 50 batches, at most 1% of wall time);
- ``observe_with_overlays``: defaults plus an overlay every 50 batches (the loop only
  copies the images; rendering and PNG writing run on a background thread).

Also the absolute cost of one probe trial (plain and torchvision transforms) and of
measuring one clip, which run only on sampled steps. Batches: 16 images 3x224x224,
10 boxes each, as a detection loader yields them.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import alternate  # noqa: E402
from prepwatch.checks.boxes.alignment import Probe  # noqa: E402
from prepwatch.checks.boxes.monitor import BoxMonitor  # noqa: E402
from prepwatch.checks.clips.consistency import clip_consistency  # noqa: E402
from prepwatch.checks.clips.synthetic import moving_object_clip  # noqa: E402
from prepwatch.context import Context  # noqa: E402
from prepwatch.demo import geometry_transforms as gt  # noqa: E402
from prepwatch.identity import Identity  # noqa: E402

BATCHES = 100  # batches per round
REFERENCE_STEP_S = 0.050  # a small detector's CPU step; GPU steps are usually longer


def _batches(n: int) -> list[tuple[torch.Tensor, list[dict[str, torch.Tensor]]]]:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(16, 3, 224, 224, generator=gen)
    out = []
    for _ in range(n):
        targets = []
        for _ in range(16):
            xy = torch.rand(10, 2, generator=gen) * 180
            wh = torch.rand(10, 2, generator=gen) * 60 + 4
            targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                            "labels": torch.randint(0, 80, (10,), generator=gen), "boxes_in": 12})
        out.append((images, targets))
    return out


def _loop(batches: list, observe: Callable[..., Any] | None) -> Callable[[], int]:
    def run() -> int:
        seen = 0
        for images, targets in batches:
            seen += len(targets)  # the "training step": nothing, so the overhead shows
            if observe is not None:
                observe(images, targets)
        return len(batches)

    return run


def _ctx() -> Context:
    return Context.create(Identity(run="bench", rank=0))


def _observe_cost(rounds: int, batches: list, **options: Any) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        monitor = BoxMonitor(_ctx(), Path(tmp) / "bench" / "rank0", **options)
        result = alternate(_loop(batches, None), _loop(batches, monitor.observe), rounds)
        monitor.close()
    result["share_of_50ms_step"] = result["overhead_us"] * 1e-6 / REFERENCE_STEP_S
    return result


def _trial_cost(transform: Any, trials: int, **options: Any) -> dict[str, float]:
    probe = Probe(transform, **options)
    probe.run(2)  # warm-up
    t0 = time.perf_counter()
    probe.run(trials)
    return {"per_trial_ms": (time.perf_counter() - t0) / trials * 1e3, "trials": trials}


def _clip_cost(size: int, clips: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    raw = moving_object_clip(rng, 8, size, size)
    aug = gt.clip_jitter(0.3, 0.3)(raw)
    clip_consistency(raw, aug)
    t0 = time.perf_counter()
    for _ in range(clips):
        clip_consistency(raw, aug)
    return {"per_clip_ms": (time.perf_counter() - t0) / clips * 1e3, "clip": f"8x3x{size}x{size}"}


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    rounds = 4 if quick else 12
    batches = _batches(BATCHES)
    results: dict[str, Any] = {
        "observe_default": _observe_cost(rounds, batches),
        "observe_every_batch": _observe_cost(rounds, batches, sample_every=1),
        "observe_with_probe": _observe_cost(
            rounds, batches, transform=gt.healthy_detection_transform(),
        ),
        "observe_with_overlays": _observe_cost(rounds, batches, overlay_every=50),
        "probe_trial_plain": _trial_cost(gt.healthy_detection_transform(), 20 if quick else 100),
        "clip_measure_64": _clip_cost(64, 5 if quick else 20),
        "clip_measure_128": _clip_cost(128, 3 if quick else 10),
    }
    try:
        from torchvision.transforms import v2
    except ImportError:
        return results
    recipe = v2.Compose([
        v2.RandomPhotometricDistort(p=1.0), v2.RandomZoomOut(p=0.5), v2.RandomIoUCrop(),
        v2.RandomHorizontalFlip(), v2.Resize((96, 128)), v2.SanitizeBoundingBoxes(),
    ])
    results["probe_trial_torchvision"] = _trial_cost(recipe, 20 if quick else 100)
    return results


def table(results: dict) -> str:
    lines = [f"{'per batch (16x3x224x224, 10 boxes each)':<42} {'bare us':>9} {'with us':>9} "
             f"{'overhead us':>12} {'of 50 ms step':>14}"]
    for name, r in results.items():
        if name.startswith("observe"):
            lines.append(f"{name:<42} {r['bare_us']:>9.2f} {r['wrapped_us']:>9.2f} "
                         f"{r['overhead_us']:>12.2f} {r['share_of_50ms_step']:>13.4%}")
    lines.append("")
    for name, r in results.items():
        if "per_trial_ms" in r:
            lines.append(f"{name:<42} {r['per_trial_ms']:>9.2f} ms per probe trial")
        if "per_clip_ms" in r:
            lines.append(f"{name:<42} {r['per_clip_ms']:>9.2f} ms per clip ({r['clip']})")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run(quick="--quick" in sys.argv)))
