"""What a new user tripped on in their first hour (issue 13): set-up mistakes fail at once,
at the call that made them, with the fix in the message."""

from __future__ import annotations

import re
import urllib.request

import pytest
import torch
from helpers import free_port
from torch.utils.data import DataLoader, TensorDataset

import prepwatch
from prepwatch.checks.inputs import Declared, InputMonitor
from prepwatch.context import Context

torch.set_num_threads(1)


# -- 3: a declared contract that cannot fit the first batch --------------------------------
@pytest.mark.parametrize("layout, shape", [("NCHW", (8, 1, 28, 28)), ("NHWC", (8, 28, 28, 1))])
def test_declared_channels_that_cannot_fit_fail_on_the_first_record(layout, shape) -> None:  # noqa: ANN001
    monitor = InputMonitor(Context.create(), declared=Declared.imagenet(), sample_every=5)
    grey = torch.rand(*shape)
    with pytest.raises(ValueError) as info:
        monitor.record(grey)
    message = str(info.value)
    assert "declares 3 channels" in message and "has 1" in message and layout in message
    assert "Declared.symmetric(channels=1)" in message and "Declared.unit(channels=1)" in message
    monitor.close()


def test_a_fitting_declaration_records_and_later_faults_still_never_raise() -> None:
    monitor = InputMonitor(Context.create(), declared=Declared.symmetric(channels=1), sample_every=1)
    monitor.record(torch.rand(8, 1, 28, 28) * 2 - 1)
    monitor.record("not a tensor")  # type: ignore[arg-type]  # later faults: counted, not raised
    monitor.flush()
    assert monitor.ctx.errors.count("inputs") == 1
    assert monitor.contract().mean.shape == (1,)
    monitor.close()


# -- 9: Declared's default channel order follows the channel count -----------------------
def test_declared_one_channel_defaults_to_grey() -> None:
    assert Declared(mean=[0.5], std=[0.5]).channel_order == "L"
    assert Declared(mean=[0.5] * 3, std=[0.5] * 3).channel_order == "RGB"
    assert Declared.from_dict({"mean": [0.1], "std": [0.2]}).channel_order == "L"
    with pytest.raises(ValueError, match="must name 1 channels"):
        Declared(mean=[0.5], std=[0.5], channel_order="RGB")  # explicit and wrong: still refused


# -- 5: a second start() with other settings -------------------------------------------
def test_second_start_with_other_settings_is_refused_naming_the_first() -> None:
    prepwatch.stop()
    first_port, other_port = free_port(), free_port()
    try:
        watch = prepwatch.start(run="my-cnn", port=first_port, sources=False)
        assert prepwatch.start() is watch  # no arguments: the running Watch
        assert prepwatch.start(run="my-cnn", port=first_port, sources=False) is watch  # same
        with pytest.raises(ValueError) as info:
            prepwatch.start(run="other", port=other_port)
        message = str(info.value)
        assert f"port={first_port}" in message and "run='my-cnn'" in message  # the first call's
        assert f"port={other_port}" in message and "run='other'" in message  # what was asked
        assert "test_first_hour.py" in message and "prepwatch.stop()" in message
        # the first Watch is untouched and still served
        body = urllib.request.urlopen(f"http://127.0.0.1:{first_port}/metrics", timeout=5).read()
        assert b'run="my-cnn"' in body
    finally:
        prepwatch.stop()
    # after stop(), the new settings are taken
    try:
        watch = prepwatch.start(run="other", port=other_port, sources=False)
        body = urllib.request.urlopen(f"http://127.0.0.1:{other_port}/metrics", timeout=5).read()
        assert b'run="other"' in body
    finally:
        prepwatch.stop()


# -- 6: the DataLoader class instead of an instance -------------------------------------
def test_loader_rejects_the_class_with_the_fix(watch) -> None:  # noqa: ANN001
    with pytest.raises(TypeError, match=re.escape("got the class DataLoader, not an instance")) as info:
        watch.loader(DataLoader)
    assert "watch.loader(DataLoader(dataset" in str(info.value)
    loader = DataLoader(TensorDataset(torch.zeros(8, 2)), batch_size=4)
    assert sum(1 for _ in watch.loader(loader)) == 2  # an instance still works
