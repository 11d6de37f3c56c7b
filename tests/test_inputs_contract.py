"""Contract capture and the contract file: what is recorded, saved, loaded and refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from prepwatch.checks.inputs.faults import MISTAKES, correct
from prepwatch.checks.inputs.monitor import (
    Declared,
    InputContract,
    InputMonitor,
    NormalizedModel,
    contract_path,
)
from prepwatch.context import Context
from prepwatch.demo.normalization_scenes import make_scenes

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def scenes() -> tuple[torch.Tensor, torch.Tensor]:
    return make_scenes(1024, 0)


def _record(monitor: InputMonitor, raw: torch.Tensor, make=None, batch: int = 64) -> None:  # noqa: ANN001
    for i in range(0, raw.shape[0], batch):
        chunk = raw[i: i + batch]
        monitor.record(make(chunk) if make else correct(chunk, monitor.declared))
        monitor.flush()
    monitor.flush()


def _samples(ctx: Context) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(ctx.registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_records_what_the_model_receives(scenes) -> None:
    raw, _ = scenes
    declared = Declared.imagenet()
    ctx = Context.create()
    monitor = InputMonitor(ctx, declared=declared, sample_every=1, images_per_sample=64)
    _record(monitor, raw)
    contract = monitor.contract()
    x = correct(raw, declared)
    truth_mean = x.mean(dim=(0, 2, 3)).numpy()
    truth_std = x.std(dim=(0, 2, 3)).numpy()
    assert np.allclose(contract.mean, truth_mean, atol=1e-3)
    assert np.allclose(contract.std, truth_std, atol=1e-3)
    assert np.allclose(contract.min, x.amin(dim=(0, 2, 3)).numpy(), atol=1e-5)
    assert np.allclose(contract.max, x.amax(dim=(0, 2, 3)).numpy(), atol=1e-5)
    t = contract.data["tensor"]
    assert (t["dtype"], t["layout"], t["channels"], t["height"], t["width"]) == (
        "float32", "NCHW", 3, 32, 32)
    assert t["channel_names"] == ["R", "G", "B"]
    assert contract.declared == declared and contract.norm_source == "declared"
    pct = contract.data["stats"]["percentiles"]
    cols = np.array([pct[k] for k in ("p0.1", "p1", "p50", "p99", "p99.9")])
    assert np.all(np.diff(cols, axis=0) >= 0)  # percentiles ordered per channel
    assert contract.data["samples"]["images"] == 1024
    # train-stage gauges and the recorded counter are live
    samples = _samples(ctx)
    key = ("prepwatch_input_channel_mean", (("channel", "R"), ("stage", "train")))
    assert key in samples and abs(samples[key] - truth_mean[0]) < 0.5
    assert samples[("prepwatch_input_batches_recorded_total", ())] == 16
    monitor.close()


def test_record_is_sampled_and_never_raises(scenes) -> None:
    raw, _ = scenes
    ctx = Context.create()
    monitor = InputMonitor(ctx, declared=Declared.imagenet(), sample_every=5)
    for _ in range(23):
        monitor.record(correct(raw[:8], monitor.declared))
    monitor.flush()
    assert monitor.recorded_batches == 5  # calls 1, 6, 11, 16, 21
    for _ in range(5):  # calls 24-28: call 26 is sampled
        monitor.record("not a tensor")  # type: ignore[arg-type]
    for _ in range(5):  # calls 29-33: call 31 is sampled
        monitor.record(torch.zeros(2, 3, 4, 5, 6))  # 5-d: not an image batch
    monitor.flush()
    assert ctx.errors.count("inputs") == 2  # counted, never raised into the loop
    assert monitor.recorded_batches == 5
    monitor.close()


def test_contract_file_round_trip(tmp_path: Path, scenes) -> None:
    raw, _ = scenes
    monitor = InputMonitor(Context.create(), declared=Declared.imagenet(), sample_every=1)
    _record(monitor, raw[:256])
    written = monitor.save_contract(tmp_path / "model.pt")
    assert written == tmp_path / "model.pt.input-contract.json"
    text = written.read_text()
    assert len(text) < 20_000  # small enough to commit beside the checkpoint
    loaded = InputContract.load(tmp_path / "model.pt")
    assert loaded.data == json.loads(text)
    assert InputContract.load(written).data == loaded.data
    assert contract_path(tmp_path) == tmp_path / "input_contract.json"
    assert contract_path("a/b.json") == Path("a/b.json")
    # a serving monitor loads it from the checkpoint path and guards with it
    serving = InputMonitor(Context.create(), contract=tmp_path / "model.pt")
    assert serving.guard(correct(raw[:64], Declared.imagenet())).ok
    assert serving.guard(MISTAKES["forgot_255"].make(raw[:64], Declared.imagenet())).kinds == (
        "scale_255",)
    monitor.close()


def test_refuses_unknown_format_and_newer_version(scenes) -> None:
    raw, _ = scenes
    monitor = InputMonitor(Context.create(), declared=Declared.imagenet(), sample_every=1)
    _record(monitor, raw[:128])
    data = monitor.contract().data
    with pytest.raises(ValueError, match="not a prepwatch input contract"):
        InputContract({**data, "format": "something-else"})
    with pytest.raises(ValueError, match="upgrade prepwatch"):
        InputContract({**data, "version": 99})
    monitor.close()


def test_nhwc_recording_and_guard(scenes) -> None:
    raw, _ = scenes
    declared = Declared.imagenet()
    monitor = InputMonitor(Context.create(), declared=declared, sample_every=1)
    _record(monitor, raw[:512], make=lambda r: correct(r, declared).permute(0, 2, 3, 1))
    contract = monitor.contract()
    assert contract.layout == "NHWC"
    monitor.use(contract)
    nhwc = correct(raw[512:576], declared).permute(0, 2, 3, 1)
    assert monitor.guard(nhwc).ok
    assert monitor.guard(nhwc.permute(0, 3, 1, 2)).kinds == ("layout",)
    monitor.close()


def test_undeclared_normalization_is_inferred_not_baked(scenes) -> None:
    raw, _ = scenes
    declared = Declared.imagenet()
    monitor = InputMonitor(Context.create(), sample_every=1)  # nothing declared
    _record(monitor, raw, make=lambda r: correct(r, declared))
    contract = monitor.contract()
    assert contract.norm_source == "inferred"
    assert contract.channel_names == ["0", "1", "2"]
    # the scenes reach black and white, so the range gives the normalization back
    assert np.allclose(contract.norm_mean, declared.unit_mean, atol=0.02)
    assert np.allclose(contract.norm_std, declared.unit_std, atol=0.02)
    with pytest.raises(ValueError, match="declared normalization"):
        NormalizedModel(torch.nn.Identity(), contract)
    monitor.use(contract)
    assert monitor.guard(MISTAKES["served_0_1"].make(raw[:64], declared)).kinds == ("range",)
    monitor.close()


def test_training_convention_is_not_a_violation(scenes) -> None:
    """A model trained on per-image standardized inputs gets them at serving: no alarm.

    The per-image fingerprint is common in its own training data, so the contract
    says chance explains it (no batch size is big enough) and the guard stays quiet.
    """
    raw, _ = scenes
    per_image = MISTAKES["per_image"].make
    monitor = InputMonitor(Context.create(), sample_every=1)
    _record(monitor, raw, make=lambda r: per_image(r, Declared.imagenet()))
    contract = monitor.contract()
    assert contract.per_image_batch["standardize_channel"] is None
    monitor.use(contract)
    eval_raw, _ = make_scenes(256, 1)
    for i in range(0, 256, 64):
        assert monitor.guard(per_image(eval_raw[i: i + 64], Declared.imagenet())).ok
    monitor.close()


def test_declared_only_contract_guards_the_physical_range(scenes) -> None:
    raw, _ = scenes
    declared = Declared.imagenet()
    contract = InputContract.from_declared(declared)
    monitor = InputMonitor(Context.create(), contract=contract)
    assert monitor.guard(correct(raw[:64], declared)).ok
    assert monitor.guard(MISTAKES["forgot_255"].make(raw[:64], declared)).kinds == ("scale_255",)
    assert monitor.guard(MISTAKES["nhwc"].make(raw[:64], declared)).kinds == ("layout",)
    # mistakes that stay inside the range need recorded statistics to be called
    assert monitor.guard(MISTAKES["served_0_1"].make(raw[:64], declared)).ok
    assert monitor.guard(MISTAKES["bgr"].make(raw[:64], declared)).channel_order == "unchecked"
    monitor.close()


def test_declared_from_torchvision_transform() -> None:
    transforms = pytest.importorskip("torchvision.transforms")
    compose = transforms.Compose([
        transforms.ToTensor(), transforms.Normalize((0.5, 0.4, 0.3), (0.2, 0.2, 0.25)),
    ])
    assert Declared.from_transform(compose) == Declared((0.5, 0.4, 0.3), (0.2, 0.2, 0.25))
    assert Declared.from_transform(transforms.Compose([transforms.ToTensor()])) == Declared.unit()
    with pytest.raises(ValueError, match="no Normalize"):
        Declared.from_transform(transforms.Compose([transforms.RandomHorizontalFlip()]))
    monitor = InputMonitor(Context.create(), declared=compose)
    assert monitor.declared == Declared((0.5, 0.4, 0.3), (0.2, 0.2, 0.25))
    monitor.close()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"mode": "loud"}, ValueError, "mode must be one of"),
    ({"sample_every": 0}, ValueError, "sample_every"),
    ({"max_images": 2}, ValueError, "max_images"),
    ({"layout": "CHW"}, ValueError, "layout"),
    ({"declared": 42}, TypeError, "declared="),
    ({"contract": "/nonexistent/model.pt"}, ValueError, "no input contract at"),
])
def test_setup_errors_say_what_to_do(kwargs, error, match) -> None:  # noqa: ANN001
    with pytest.raises(error, match=match):
        InputMonitor(Context.create(), **kwargs)


def test_declared_validation() -> None:
    with pytest.raises(ValueError, match="one value per channel"):
        Declared((0.5, 0.5), (0.2,))
    with pytest.raises(ValueError, match="std must be > 0"):
        Declared((0.5,), (0.0,), channel_order="L")
    with pytest.raises(ValueError, match="channel_order"):
        Declared((0.5, 0.5, 0.5), (0.2, 0.2, 0.2), channel_order="RG")
    mm = Declared((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), max_value=255.0)
    assert np.allclose(mm.unit_mean, Declared.imagenet().unit_mean, atol=1e-3)


def test_guard_without_contract_is_a_setup_error() -> None:
    monitor = InputMonitor(Context.create())
    with pytest.raises(ValueError, match="no input contract to guard against"):
        monitor.guard(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="no training batches recorded"):
        monitor.contract()
    monitor.close()
