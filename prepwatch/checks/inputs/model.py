"""Bake the input normalization into the model, so the weights carry their contract.

``NormalizedModel(model, contract)`` takes raw pixels (uint8 0-255, or float in
[0, 1]) and applies the training normalization itself; ``mean``/``std`` and the
contract JSON are buffers, so ``state_dict()``, TorchScript and ``torch.export``
all carry them with the weights. A server then cannot forget /255, use other
statistics or swap the channels by accident, and ``InputContract.from_module``
reads the contract back out of any of those artifacts.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from prepwatch.checks.inputs.contract import BUFFER_NAME, InputContract
from prepwatch.checks.inputs.declared import Declared


class NormalizedModel(nn.Module):
    """``model`` with its input normalization in front.

    Input: ``(N, C, H, W)`` (or ``(N, H, W, C)`` with ``input_layout="NHWC"``), uint8
    0-255 or floating point in [0, 1], channels in ``input_order`` (default the
    order the model was trained on). The normalization comes from the contract's
    declared pipeline, or from ``declared=``; a contract whose normalization was only
    inferred from statistics is refused, since baking a guess would hide mistakes.
    """

    __jit_unused_properties__ = ["contract"]  # TorchScript: read it with from_module

    def __init__(
        self,
        model: nn.Module,
        contract: InputContract | None = None,
        *,
        declared: Declared | None = None,
        input_layout: str = "NCHW",
        input_order: str | None = None,
    ) -> None:
        super().__init__()
        if declared is None:
            if contract is None or contract.declared is None:
                raise ValueError(
                    "NormalizedModel needs the declared normalization: record with "
                    "watch.inputs(declared=Declared(mean, std)) or pass declared=..."
                )
            declared = contract.declared
        if contract is None:
            contract = InputContract.from_declared(declared)
        if input_layout not in ("NCHW", "NHWC"):
            raise ValueError(f"input_layout must be 'NCHW' or 'NHWC', got {input_layout!r}")
        trained = declared.channel_order
        order = trained if input_order is None else input_order
        if sorted(order) != sorted(trained):
            raise ValueError(
                f"input_order {order!r} must be a permutation of the trained order {trained!r}"
            )
        c = len(declared.mean)
        self.model = model
        self.register_buffer("mean", torch.tensor(declared.unit_mean, dtype=torch.float32)
                             .view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(declared.unit_std, dtype=torch.float32)
                             .view(1, c, 1, 1))
        self.register_buffer(BUFFER_NAME, contract.to_tensor())
        # index_select picks, for each trained channel, where the caller put it
        self.register_buffer(
            "channel_index", torch.tensor([order.index(ch) for ch in trained], dtype=torch.long),
            persistent=False,
        )
        self.reorder: bool = order != trained
        self.nhwc: bool = input_layout == "NHWC"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 255.0 if x.dtype == torch.uint8 else 1.0
        x = x.to(self.mean.dtype) / scale
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        if self.reorder:
            x = x.index_select(1, self.channel_index)
        return self.model((x - self.mean) / self.std)

    @property
    def contract(self) -> InputContract:
        return InputContract.from_tensor(getattr(self, BUFFER_NAME))

    def _load_from_state_dict(
        self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any,
    ) -> None:
        # The contract's JSON length differs between models: take the saved one's size.
        key = prefix + BUFFER_NAME
        if key in state_dict:
            self._buffers[BUFFER_NAME] = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
