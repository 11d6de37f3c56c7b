"""The serving guard: modes, metrics, hooks, structural checks and its own faults."""

from __future__ import annotations

import logging

import pytest
import torch
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from prepwatch.checks.inputs.faults import MISTAKES, correct
from prepwatch.checks.inputs.monitor import (
    VIOLATION_KINDS,
    Declared,
    InputContractError,
    InputMonitor,
    NormalizedModel,
)
from prepwatch.context import Context
from prepwatch.demo.normalization_scenes import SceneNet, make_scenes

torch.set_num_threads(1)
DECLARED = Declared.imagenet()


@pytest.fixture(scope="module")
def contract():
    raw, _ = make_scenes(2048, 0)
    monitor = InputMonitor(Context.create(), declared=DECLARED, sample_every=1)
    for i in range(0, raw.shape[0], 64):
        monitor.record(correct(raw[i: i + 64], DECLARED))
        monitor.flush()
    built = monitor.contract()
    monitor.close()
    return built


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return make_scenes(64, 1)[0]


def _samples(ctx: Context) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(ctx.registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _violations(ctx: Context) -> dict[str, float]:
    return {
        dict(labels)["kind"]: v for (name, labels), v in _samples(ctx).items()
        if name == "prepwatch_input_contract_violations_total"
    }


def test_count_mode_and_metrics(contract, batch) -> None:
    ctx = Context.create()
    monitor = InputMonitor(ctx, contract=contract)
    assert _violations(ctx) == dict.fromkeys(VIOLATION_KINDS, 0.0)  # pre-created
    assert monitor.guard(correct(batch, DECLARED)).ok
    result = monitor.guard(MISTAKES["served_0_1"].make(batch, DECLARED))
    assert (result.ok, result.kinds, result.cause, result.explanation) == (
        False, ("range",), "range", "range_0_1")
    assert "no mean/std normalization" in result.detail
    monitor.guard(MISTAKES["uint8"].make(batch, DECLARED))
    counts = _violations(ctx)
    assert counts["range"] == 2 and counts["dtype"] == 1 and counts["scale_255"] == 0
    samples = _samples(ctx)
    assert samples[("prepwatch_input_batches_checked_total", ())] == 3
    assert samples[("prepwatch_input_batches_off_contract_total", ())] == 2
    assert samples[("prepwatch_input_contract_info", (("dtype", "float32"), ("layout", "NCHW"),
                                                       ("source", "declared")))] == 1
    assert samples[("prepwatch_input_channel_order_verifiable", ())] == 1
    assert samples[("prepwatch_input_check_seconds_count", ())] == 3
    for stage in ("train", "serve"):  # side by side: contract reference and served batches
        for channel in "RGB":
            for stat in ("mean", "std", "min", "max"):
                key = (f"prepwatch_input_channel_{stat}", (("channel", channel), ("stage", stage)))
                assert key in samples, key
    # the served [0, 1] batches moved the serve mean away from the train one
    train_mean = samples[("prepwatch_input_channel_mean", (("channel", "R"), ("stage", "train")))]
    serve_mean = samples[("prepwatch_input_channel_mean", (("channel", "R"), ("stage", "serve")))]
    assert abs(serve_mean - train_mean) > 0.3
    monitor.close()


def test_warn_mode_logs_each_kind_once(contract, batch, caplog) -> None:
    monitor = InputMonitor(Context.create(), contract=contract, mode="warn")
    with caplog.at_level(logging.WARNING, logger="prepwatch"):
        for _ in range(3):
            monitor.guard(MISTAKES["forgot_255"].make(batch, DECLARED))
        monitor.guard(MISTAKES["bgr"].make(batch, DECLARED))
    warnings = [r.getMessage() for r in caplog.records if "input contract" in r.getMessage()]
    assert len(warnings) == 2
    assert "scale_255" in warnings[0] and "channel_order" in warnings[1]
    monitor.close()


def test_raise_mode(contract, batch) -> None:
    monitor = InputMonitor(Context.create(), contract=contract, mode="raise")
    assert monitor.guard(correct(batch, DECLARED)).ok
    with pytest.raises(InputContractError, match="per_image") as info:
        monitor.guard(MISTAKES["per_image"].make(batch, DECLARED))
    assert info.value.result.kinds == ("per_image",)
    # per call override
    assert not monitor.guard(MISTAKES["per_image"].make(batch, DECLARED), mode="count").ok
    monitor.close()


def test_attach_guards_every_forward(contract, batch) -> None:
    ctx = Context.create()
    monitor = InputMonitor(ctx, contract=contract)
    model = SceneNet().eval()
    baked = NormalizedModel(model, contract).eval()
    handle = monitor.attach(baked, mode="raise")  # sits on the inner model
    with torch.no_grad():
        baked(batch)  # raw uint8 in: the inner model gets the contract's tensor
        baked(batch.float() / 255.0)
        with pytest.raises(InputContractError, match="scale_255"):
            baked(batch.float())  # [0, 255] floats where [0, 1] was promised
    handle.remove()
    with torch.no_grad():
        baked(batch.float())  # no hook any more
    checked = _samples(ctx)[("prepwatch_input_batches_checked_total", ())]
    assert checked == 3
    monitor.attach(model)
    monitor.close()  # removes the hooks it made
    with torch.no_grad():
        model(MISTAKES["forgot_255"].make(batch, DECLARED))
    assert _samples(ctx)[("prepwatch_input_batches_checked_total", ())] == 3


def test_check_every(contract, batch) -> None:
    ctx = Context.create()
    monitor = InputMonitor(ctx, contract=contract, check_every=3)
    results = [monitor.guard(MISTAKES["forgot_255"].make(batch, DECLARED)) for _ in range(9)]
    assert [r.checked for r in results] == [True, False, False] * 3
    assert _violations(ctx)["scale_255"] == 3
    monitor.close()


def test_dtype_and_layout(contract, batch) -> None:
    monitor = InputMonitor(Context.create(), contract=contract)
    x = correct(batch, DECLARED)
    assert monitor.guard(x.half()).ok  # precision differences are not a contract change
    assert monitor.guard(x.double()).ok
    assert monitor.guard(x.to(torch.bfloat16)).ok
    assert monitor.guard(x[0]).ok  # one unbatched image
    r = monitor.guard(batch)
    assert r.kinds == ("range", "dtype") and "uint8" in r.detail
    assert "dtype" in monitor.guard(x.round().to(torch.int64)).kinds
    r = monitor.guard(x.permute(0, 2, 3, 1))
    assert r.kinds == ("layout",) and "NHWC" in r.detail and r.channel_order == "ok"
    assert monitor.guard(x[:, :1]).kinds == ("layout",)  # grey image for an RGB model
    assert monitor.guard(x.unsqueeze(0)).kinds == ("layout",)
    assert monitor.guard(x[:0]).ok  # an empty batch says nothing
    monitor.close()


def test_non_finite_values(contract, batch) -> None:
    monitor = InputMonitor(Context.create(), contract=contract)
    x = correct(batch, DECLARED)
    x[3, 1, 5, 5] = float("nan")
    result = monitor.guard(x)
    assert result.kinds == ("range",) and "non-finite" in result.detail
    monitor.close()


def test_per_image_needs_more_than_one_image(contract, batch) -> None:
    """One standardized image could be chance; the contract says how many make it sure."""
    monitor = InputMonitor(Context.create(), contract=contract)
    need = contract.per_image_batch["standardize_channel"]
    assert need is not None and 1 < need <= 8
    served = MISTAKES["per_image"].make(batch, DECLARED)
    assert "per_image" not in monitor.guard(served[: need - 1]).kinds
    assert monitor.guard(served[:need]).kinds == ("per_image",)
    monitor.close()


def test_guard_fault_is_counted_not_raised(contract) -> None:
    ctx = Context.create()
    monitor = InputMonitor(ctx, contract=contract, mode="raise")
    result = monitor.guard(torch.empty(4, 3, 32, 32, device="meta"))  # no data to read
    assert result.ok and not result.checked and "guard failed" in result.detail
    assert ctx.errors.count("inputs") == 1
    with pytest.raises(TypeError, match="input tensor"):
        monitor.guard([1, 2, 3])  # type: ignore[arg-type]
    monitor.close()


def test_through_watch_and_its_endpoint(watch, batch) -> None:
    """watch.inputs() is the monitor; its series reach /metrics with run and rank."""
    import urllib.request

    inputs = watch.inputs(declared=DECLARED, sample_every=1)
    assert watch.inputs() is inputs
    raw, _ = make_scenes(512, 2)
    for i in range(0, 512, 64):
        inputs.record(correct(raw[i: i + 64], DECLARED))
    inputs.use(inputs.contract())
    inputs.guard(MISTAKES["bgr"].make(batch, DECLARED))
    text = urllib.request.urlopen(watch.url, timeout=5).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    violations = {
        s.labels["kind"]: s.value
        for s in families["prepwatch_input_contract_violations"].samples
        if s.name.endswith("_total")
    }
    assert violations["channel_order"] == 1 and sum(violations.values()) == 1
    sample = families["prepwatch_input_channel_mean"].samples[0]
    assert sample.labels["run"] == "test" and sample.labels["rank"] == "0"
