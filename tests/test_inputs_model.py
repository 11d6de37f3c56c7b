"""Normalization baked into the model: same outputs, and the contract rides along.

Round trips: state_dict, TorchScript and torch.export; each is exported, loaded
back, fed raw pixels, and must give the original model's outputs on correctly
normalized input, with the contract readable from the loaded artifact.
"""

from __future__ import annotations

import io

import pytest
import torch

from prepwatch.checks.inputs.faults import correct
from prepwatch.checks.inputs.monitor import (
    Declared,
    InputContract,
    InputMonitor,
    NormalizedModel,
)
from prepwatch.context import Context
from prepwatch.demo.normalization_scenes import SceneNet, make_scenes

torch.set_num_threads(1)
DECLARED = Declared.imagenet()


@pytest.fixture(scope="module")
def setup():
    raw, _ = make_scenes(512, 0)
    monitor = InputMonitor(Context.create(), declared=DECLARED, sample_every=1)
    for i in range(0, raw.shape[0], 64):
        monitor.record(correct(raw[i: i + 64], DECLARED))
    contract = monitor.contract()
    monitor.close()
    torch.manual_seed(0)
    model = SceneNet().eval()
    with torch.no_grad():  # give BatchNorm running statistics that are not the defaults
        model.train()
        model(correct(raw, DECLARED))
        model.eval()
    return model, contract, make_scenes(16, 1)[0]


def _expected(model: torch.nn.Module, raw: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(correct(raw, DECLARED))


def test_raw_pixels_in_same_outputs(setup) -> None:
    model, contract, raw = setup
    baked = NormalizedModel(model, contract).eval()
    want = _expected(model, raw)
    with torch.no_grad():
        assert torch.allclose(baked(raw), want, atol=1e-5)                   # uint8
        assert torch.allclose(baked(raw.float() / 255.0), want, atol=1e-5)  # [0, 1] float
        nhwc = NormalizedModel(model, contract, input_layout="NHWC").eval()
        assert torch.allclose(nhwc(raw.permute(0, 2, 3, 1)), want, atol=1e-5)
        bgr = NormalizedModel(model, contract, input_order="BGR").eval()
        assert torch.allclose(bgr(raw.flip(1)), want, atol=1e-5)  # OpenCV pixels, handled
    assert baked.contract.data == contract.data


def test_refuses_wrong_setup(setup) -> None:
    model, contract, _ = setup
    with pytest.raises(ValueError, match="input_layout"):
        NormalizedModel(model, contract, input_layout="CHW")
    with pytest.raises(ValueError, match="input_order"):
        NormalizedModel(model, contract, input_order="RGBA")
    # declared alone works: the contract then holds the declared range only
    alone = NormalizedModel(model, declared=DECLARED)
    assert alone.contract.norm_source == "declared"


def test_state_dict_round_trip(setup) -> None:
    model, contract, raw = setup
    baked = NormalizedModel(model, contract).eval()
    buf = io.BytesIO()
    torch.save(baked.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert InputContract.from_module(state).data == contract.data
    # a fresh wrapper built with another (shorter) contract takes the saved one
    fresh = NormalizedModel(SceneNet(), declared=Declared.unit()).eval()
    fresh.load_state_dict(state)
    assert fresh.contract.data == contract.data
    with torch.no_grad():
        assert torch.allclose(fresh(raw), _expected(model, raw), atol=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, still used
def test_torchscript_round_trip(setup) -> None:
    model, contract, raw = setup
    baked = NormalizedModel(model, contract).eval()
    scripted = torch.jit.script(baked)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    with torch.no_grad():
        assert torch.allclose(loaded(raw), _expected(model, raw), atol=1e-5)
        assert torch.allclose(loaded(raw.float() / 255.0), _expected(model, raw), atol=1e-5)
    assert InputContract.from_module(loaded).data == contract.data


def test_torch_export_round_trip(setup) -> None:
    model, contract, raw = setup
    baked = NormalizedModel(model, contract).eval()
    program = torch.export.export(baked, (raw,))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    buf.seek(0)
    loaded = torch.export.load(buf)
    with torch.no_grad():
        assert torch.allclose(loaded.module()(raw), _expected(model, raw), atol=1e-5)
    assert InputContract.from_module(loaded).data == contract.data
    assert InputContract.from_module(loaded.module()).data == contract.data


def test_dtype_cast_keeps_the_contract(setup) -> None:
    """``.double()``/``.half()`` cast mean/std with the weights; the contract stays bytes."""
    model, contract, raw = setup
    baked = NormalizedModel(SceneNet(), contract)
    baked.load_state_dict(NormalizedModel(model, contract).state_dict())
    wide = baked.double().eval()
    assert wide.contract.data == contract.data
    with torch.no_grad():
        out = wide(raw)
    assert out.dtype == torch.float64
    assert torch.allclose(out.float(), _expected(model, raw), atol=1e-4)
