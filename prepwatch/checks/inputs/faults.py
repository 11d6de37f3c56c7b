"""Known serving mistakes, reproduced from raw pixels: to test a guard, demo it, measure it.

Each mistake takes a raw uint8 batch ``(N, C, H, W)`` and the training
normalization, and returns what a server making that mistake would hand the
model. ``correct`` is the training pipeline itself. ``expected_kind`` says which
violation kind the guard should report for it under a given contract (a mistake
can coincide with the contract's own pipeline, e.g. serving [-1, 1] to a [-1, 1]
model: then it is no mistake and the expected kind is None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from prepwatch.checks.inputs.declared import Declared
from prepwatch.checks.inputs.hypotheses import IMAGENET_MEAN, IMAGENET_STD


def _ms(declared: Declared, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = len(declared.mean)
    m = torch.tensor(declared.unit_mean, dtype=torch.float32, device=like.device).view(1, c, 1, 1)
    s = torch.tensor(declared.unit_std, dtype=torch.float32, device=like.device).view(1, c, 1, 1)
    return m, s


def correct(raw: torch.Tensor, d: Declared) -> torch.Tensor:
    m, s = _ms(d, raw)
    return (raw.float() / 255.0 - m) / s


def _forgot_255(raw: torch.Tensor, d: Declared) -> torch.Tensor:
    m, s = _ms(d, raw)
    return (raw.float() - m) / s


def _double_255(raw: torch.Tensor, d: Declared) -> torch.Tensor:
    m, s = _ms(d, raw)
    return (raw.float() / 255.0 / 255.0 - m) / s


def _double_norm(raw: torch.Tensor, d: Declared) -> torch.Tensor:
    m, s = _ms(d, raw)
    return (correct(raw, d) - m) / s


def _unit(raw: torch.Tensor, d: Declared) -> torch.Tensor:
    return raw.float() / 255.0


def _pm1(raw: torch.Tensor, d: Declared) -> torch.Tensor:
    return raw.float() / 127.5 - 1.0


def _raw_float(raw: torch.Tensor, d: Declared) -> torch.Tensor:
    return raw.float()


def _imagenet(raw: torch.Tensor, d: Declared) -> torch.Tensor:
    return correct(raw, Declared(IMAGENET_MEAN, IMAGENET_STD))


def _bgr(raw: torch.Tensor, d: Declared) -> torch.Tensor:
    return correct(raw.flip(1), d)


def _per_image(raw: torch.Tensor, d: Declared) -> torch.Tensor:
    x = raw.float() / 255.0
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True).clamp_min(1.0 / 255.0)
    return (x - mean) / std


def _per_image_global(raw: torch.Tensor, d: Declared) -> torch.Tensor:
    x = raw.float() / 255.0
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1.0 / 255.0)
    return (x - mean) / std


def _uint8(raw: torch.Tensor, d: Declared) -> torch.Tensor:
    return raw.clone()


def _nhwc(raw: torch.Tensor, d: Declared) -> torch.Tensor:
    return correct(raw, d).permute(0, 2, 3, 1).contiguous()


@dataclass(frozen=True)
class Mistake:
    name: str
    kind: str | None          # the kind the guard should name (None: not a mistake)
    description: str
    make: Callable[[torch.Tensor, Declared], torch.Tensor]
    same_as: Callable[[Declared], bool] = lambda d: False  # coincides with the contract
    # on a [0, 1] contract, serving 0-255 values *is* forgetting /255
    unit_kind: str | None = None

    def expected_kind(self, declared: Declared) -> str | None:
        if self.same_as(declared):
            return None
        if self.unit_kind is not None and _is_unit(declared):
            return self.unit_kind
        return self.kind

    def model_input(self, served: torch.Tensor) -> torch.Tensor:
        """What a lenient server passes on to a float NCHW model instead of failing.

        uint8 is cast to float without /255; an NHWC tensor is ``reshape``d to NCHW
        (the classic bug: it runs, and scrambles the pixels; ``permute`` is right).
        """
        if self.kind == "layout":
            n, h, w, c = served.shape
            return served.reshape(n, c, h, w)
        return served.float()


def _close(values: tuple[float, ...], target: float, tol: float = 1e-3) -> bool:
    return all(abs(v - target) < tol for v in values)


def _is_unit(d: Declared) -> bool:
    return _close(tuple(d.unit_mean), 0.0) and _close(tuple(d.unit_std), 1.0)


def _is_pm1(d: Declared) -> bool:
    return _close(tuple(d.unit_mean), 0.5) and _close(tuple(d.unit_std), 0.5)


def _is_imagenet(d: Declared) -> bool:
    return all(abs(a - b) < 0.02 for a, b in zip(d.unit_mean, IMAGENET_MEAN)) and all(
        abs(a - b) < 0.02 for a, b in zip(d.unit_std, IMAGENET_STD)
    )


MISTAKES: dict[str, Mistake] = {
    m.name: m for m in (
        Mistake("forgot_255", "scale_255", "0-255 values normalized without /255", _forgot_255),
        Mistake("double_255", "double_scaled", "/255 applied twice", _double_255),
        Mistake("double_normalize", "double_scaled", "mean/std normalization applied twice",
                _double_norm, same_as=_is_unit),
        Mistake("served_0_1", "range", "[0, 1] values, normalization skipped", _unit,
                same_as=_is_unit),
        Mistake("served_pm1", "range", "[-1, 1] values", _pm1, same_as=_is_pm1),
        Mistake("served_0_255", "range", "raw 0-255 floats, no scaling or normalization",
                _raw_float, unit_kind="scale_255"),
        Mistake("imagenet_stats", "range", "ImageNet mean/std instead of the model's", _imagenet,
                same_as=_is_imagenet),
        Mistake("bgr", "channel_order", "BGR pixels (OpenCV) fed to an RGB model", _bgr),
        Mistake("per_image", "per_image", "each image standardized per channel", _per_image),
        Mistake("per_image_global", "per_image", "each image standardized over all channels",
                _per_image_global),
        Mistake("uint8", "dtype", "raw uint8 tensor handed to a float model", _uint8),
        Mistake("nhwc", "layout", "NHWC (channels-last) tensor for an NCHW model", _nhwc),
    )
}


def served(raw: torch.Tensor, declared: Declared, mistake: str | None = None) -> torch.Tensor:
    """The batch a server hands the model: correct, or made with ``mistake``."""
    if mistake is None:
        return correct(raw, declared)
    return MISTAKES[mistake].make(raw, declared)
