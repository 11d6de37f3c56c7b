"""What kind of transform the user handed a probe: shared by the box and clip probes."""

from __future__ import annotations

from typing import Any


def is_tv_transform(transform: Any) -> bool:
    """True for torchvision.transforms.v2 transforms, without importing torchvision."""
    for cls in type(transform).__mro__:
        if cls.__module__.startswith("torchvision.transforms.v2") and cls.__name__ == "Transform":
            return True
    return False
