"""Cost of the input-contract guard next to a ResNet-18 forward pass, on CPU.

Both are timed in this one process, on the same 64x3x224x224 float32 batch and
the same torch thread count, so the ratio does not depend on the machine. The
guard reads a strided grid of every image (every 3rd row and column at 224x224:
5,625 of 50,176 pixels per channel, see prepwatch/checks/inputs/stats.py) and
makes one more pass over that grid only when a batch's extremes already left the
contract's range. Also timed: ``record()`` on a sampled and on a skipped step.

Run: ``python bench/bench_normalization.py`` (prints a table), or call ``run()``.
Target (issue 6): guard <= 2% of the forward pass.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch
from torch import nn

BATCH, SIZE = 64, 224


def _resnet18() -> tuple[nn.Module, str]:
    try:
        import torchvision

        return torchvision.models.resnet18(weights=None), "torchvision resnet18"
    except Exception:  # pragma: no cover - torchvision is optional
        return _HandResNet18(), "hand-written resnet18"


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(y)) + self.down(x))


class _HandResNet18(nn.Module):
    """Same layer shapes as torchvision's resnet18 (11.7M parameters, 1.8 GFLOPs/image)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        ]
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_Block(cin, cout, stride), _Block(cout, cout, 1)]
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(quick: bool = False, repeats: int = 5, forward_repeats: int = 3) -> dict[str, Any]:
    """Time guard and forward on the same batch; returns seconds and the guard's share.

    ``quick`` (``python -m bench.run --quick``) times each once or twice.
    """
    if quick:
        repeats, forward_repeats = 2, 1
    from prepwatch.checks.inputs.faults import correct, served
    from prepwatch.checks.inputs.monitor import Declared, InputMonitor
    from prepwatch.checks.inputs.stats import grid_stride
    from prepwatch.context import Context
    from prepwatch.demo.normalization_scenes import make_scenes

    declared = Declared.imagenet()
    ctx = Context.create()
    monitor = InputMonitor(ctx, declared=declared, sample_every=1, images_per_sample=16)
    for seed in range(6):  # a contract from 96 images of the same kind of content
        raw, _ = make_scenes(16, seed, size=SIZE)
        monitor.record(correct(raw, declared))
    contract = monitor.contract()
    monitor.use(contract)

    raw, _ = make_scenes(BATCH, 100, size=SIZE)
    x = correct(raw, declared).contiguous()
    x_bad = served(raw, declared, "forgot_255").contiguous()
    model, model_name = _resnet18()
    model.eval()
    with torch.inference_mode():
        forward = _median_time(lambda: model(x), forward_repeats)
    guard_ok = _median_time(lambda: monitor.guard(x), repeats)
    guard_bad = _median_time(lambda: monitor.guard(x_bad), repeats)
    assert monitor.guard(x).ok and not monitor.guard(x_bad).ok

    recorder = InputMonitor(Context.create(), declared=declared, sample_every=10)
    record_sampled = _median_time(lambda: recorder._recorder.submit(x), repeats)
    recorder.flush()
    record_skipped = _median_time(lambda: recorder.record(x), 50)
    recorder.close()
    monitor.close()
    stride = grid_stride(SIZE, SIZE)
    kept = len(range(0, SIZE, stride)) ** 2
    return {
        "model": model_name,
        "threads": torch.get_num_threads(),
        "batch": f"{BATCH}x3x{SIZE}x{SIZE} float32",
        "subsample": f"stride-{stride} grid of rows and columns: {kept} of {SIZE * SIZE} "
                     "pixels per channel per image",
        "forward_s": forward,
        "guard_s": guard_ok,
        "guard_share": guard_ok / forward,
        "guard_off_contract_s": guard_bad,
        "guard_off_contract_share": guard_bad / forward,
        "record_sampled_s": record_sampled,
        "record_skipped_s": record_skipped,
        "target_share": 0.02,
    }


def main() -> None:
    result = run()
    print(f"{'model':28s} {result['model']} ({result['threads']} threads)")
    print(f"{'batch':28s} {result['batch']}")
    print(f"{'guard reads':28s} {result['subsample']}")
    print(f"{'forward pass':28s} {1e3 * result['forward_s']:9.1f} ms")
    print(f"{'guard, batch on contract':28s} {1e3 * result['guard_s']:9.2f} ms"
          f"  {100 * result['guard_share']:.2f}% of forward (target <= 2%)")
    print(f"{'guard, batch off contract':28s} {1e3 * result['guard_off_contract_s']:9.2f} ms"
          f"  {100 * result['guard_off_contract_share']:.2f}% of forward")
    print(f"{'record(), sampled step':28s} {1e3 * result['record_sampled_s']:9.2f} ms")
    print(f"{'record(), skipped step':28s} {1e6 * result['record_skipped_s']:9.2f} us")


if __name__ == "__main__":
    main()
