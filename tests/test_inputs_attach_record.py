"""Capture when a framework owns the loop: ``inputs.attach(model, record=True)``."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from prepwatch.checks.inputs import Declared, InputMonitor, correct
from prepwatch.context import Context
from prepwatch.demo.normalization_scenes import SceneNet, make_scenes

torch.set_num_threads(1)
DECLARED = Declared.imagenet()


def _fit(model: torch.nn.Module, loader: DataLoader, val: torch.Tensor) -> None:
    """A loop the user does not own: train passes, then a validation pass in eval mode."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        model(val)


def test_attach_record_captures_training_forwards_only() -> None:
    raw, labels = make_scenes(256, 0)
    x = correct(raw, DECLARED)
    loader = DataLoader(TensorDataset(x, labels), batch_size=32)
    monitor = InputMonitor(Context.create(), declared=DECLARED, sample_every=1)
    model = SceneNet()
    handle = monitor.attach(model, record=True)
    _fit(model, loader, x[:32] * 50.0)  # a validation pass far off contract: must not count
    assert monitor.flush(30.0)
    assert monitor.recorded_batches == len(loader)  # every training forward, no eval one
    contract = monitor.contract()
    assert contract.max.max() < 5.0  # the x50 validation batch never reached the contract
    handle.remove()
    _fit(model, loader, x[:32])
    assert monitor.flush(30.0)
    assert monitor.recorded_batches == len(loader)  # hook removed: nothing more
    monitor.close()


def test_attach_record_then_guard_with_the_contract_it_built() -> None:
    raw, labels = make_scenes(512, 1)
    x = correct(raw, DECLARED)
    loader = DataLoader(TensorDataset(x, labels), batch_size=64)
    train = InputMonitor(Context.create(), declared=DECLARED, sample_every=1)
    model = SceneNet()
    train.attach(model, record=True)
    _fit(model, loader, x[:8])
    contract = train.contract()
    train.close()
    serve = InputMonitor(Context.create(), contract=contract)
    assert serve.guard(x[:64]).ok
    bad = serve.guard(x[:64] * 255.0)
    assert not bad.ok and bad.kinds
    serve.close()


def test_attach_record_refuses_a_non_bool() -> None:
    monitor = InputMonitor(Context.create())
    with pytest.raises(TypeError, match="record"):
        monitor.attach(SceneNet(), record="yes")  # type: ignore[arg-type]
    monitor.close()
