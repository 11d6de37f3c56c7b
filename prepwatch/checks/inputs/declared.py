"""What the pipeline says its normalization is (mean, std, channel order), as declared.

``Declared.imagenet()``, ``unit()``, ``symmetric()`` or ``from_transform(...)``: the
contract keeps it beside what was measured, and the guard prefers it where known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np


def as_floats(values: Any) -> list[float]:
    return [float(f"{float(v):.6g}") for v in np.asarray(values, dtype=np.float64).ravel()]


def default_channel_order(channels: int) -> str:
    """RGB for 3 channels, L for 1, else one digit per channel."""
    return {3: "RGB", 1: "L"}.get(channels, "0123456789"[:channels])


@dataclass(frozen=True)
class Declared:
    """The normalization the training pipeline applies, as ``Normalize(mean, std)`` sees it.

    ``max_value`` is the scale ``mean``/``std`` are written in: 1.0 when they apply to
    [0, 1] tensors (torchvision ``ToTensor`` then ``Normalize``), 255.0 when they apply
    to 0-255 values (mmcv/detectron style). ``channel_order`` names the channels the
    model was trained on, e.g. "RGB" or "BGR"; left out, it is "RGB" for 3 channels,
    "L" for 1, else one digit per channel.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    max_value: float = 1.0
    channel_order: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if not self.channel_order:
            object.__setattr__(self, "channel_order", default_channel_order(len(self.mean)))
        if not self.mean or len(self.mean) != len(self.std):
            raise ValueError(
                f"Declared(mean, std) need one value per channel each, got {self.mean} and "
                f"{self.std}"
            )
        if any(not (v > 0) for v in self.std):
            raise ValueError(f"Declared std must be > 0 per channel, got {self.std}")
        if not (self.max_value > 0):
            raise ValueError(f"Declared max_value must be > 0 (1.0 or 255.0), got {self.max_value}")
        if len(self.channel_order) != len(self.mean):
            raise ValueError(
                f"channel_order {self.channel_order!r} must name {len(self.mean)} channels, "
                "e.g. 'RGB' or 'BGR'"
            )

    @classmethod
    def imagenet(cls) -> Declared:
        """``ToTensor()`` then ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``."""
        return cls((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

    @classmethod
    def unit(cls, channels: int = 3) -> Declared:
        """[0, 1] tensors, no mean/std (``ToTensor()`` alone)."""
        return cls((0.0,) * channels, (1.0,) * channels, channel_order=default_channel_order(channels))

    @classmethod
    def symmetric(cls, channels: int = 3) -> Declared:
        """[-1, 1] tensors (``Normalize(0.5, 0.5)``)."""
        return cls((0.5,) * channels, (0.5,) * channels, channel_order=default_channel_order(channels))

    @classmethod
    def from_transform(cls, transform: Any, channel_order: str = "RGB") -> Declared:
        """Read ``Normalize`` out of a torchvision ``Compose`` (v1 or v2), by duck typing."""
        steps = list(getattr(transform, "transforms", [transform]))
        for step in steps:
            if type(step).__name__ == "Normalize" and hasattr(step, "mean"):
                mean = [float(v) for v in step.mean]
                std = [float(v) for v in step.std]
                order = channel_order if len(channel_order) == len(mean) else default_channel_order(
                    len(mean))
                return cls(tuple(mean), tuple(std), 1.0, order)
        names = [type(s).__name__ for s in steps]
        if any(n in ("ToTensor", "ToDtype", "ConvertImageDtype") for n in names):
            return cls.unit(3)
        raise ValueError(
            f"no Normalize/ToTensor step found in {names}; pass Declared(mean, std, ...) instead"
        )

    @property
    def unit_mean(self) -> np.ndarray:
        return np.asarray(self.mean, dtype=np.float64) / self.max_value

    @property
    def unit_std(self) -> np.ndarray:
        return np.asarray(self.std, dtype=np.float64) / self.max_value

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean), "std": list(self.std), "max_value": self.max_value,
            "channel_order": self.channel_order,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Declared:
        return cls(tuple(d["mean"]), tuple(d["std"]), float(d.get("max_value", 1.0)),
                   str(d.get("channel_order") or ""))

    def fit_error(self, channels: int, shape: tuple[int, ...], layout: str) -> str | None:
        """Why this declaration cannot describe a batch with ``channels`` channels, or None.

        Checked on the first recorded batch, so a wrong preset fails at once instead of
        when the contract is saved at the end of the run.
        """
        if channels == len(self.mean):
            return None
        return (
            f"watch.inputs(declared=...) declares {len(self.mean)} channels (mean={self.mean}) "
            f"but the first recorded batch has {channels} (shape {shape}, {layout}): declare "
            f"what the pipeline applies to {channels}-channel inputs, e.g. "
            f"Declared.symmetric(channels={channels}) for Normalize(0.5, 0.5), "
            f"Declared.unit(channels={channels}) for ToTensor() alone, or "
            f"Declared(mean=[...], std=[...]) with {channels} values each"
        )
