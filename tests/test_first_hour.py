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


# -- 9: set-up errors on the command line say "prepwatch:" once, without [Errno N] -------
def test_cli_set_up_errors_have_one_prefix(tmp_path) -> None:  # noqa: ANN001
    import os
    import socket
    import subprocess
    import sys

    cli = [sys.executable, "-m", "prepwatch.cli.main", "agent"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        taken = subprocess.run([*cli, "--port", str(port), "--state-dir", str(tmp_path / "s")],
                               capture_output=True, text=True, timeout=120, env=env)
    (tmp_path / "file").write_text("not a directory")
    unwritable = subprocess.run([*cli, "--port", "0", "--state-dir", str(tmp_path / "file" / "s")],
                                capture_output=True, text=True, timeout=120, env=env)
    for out, says in ((taken, f"port {port} on 127.0.0.1 is already in use"),
                      (unwritable, "state directory")):
        assert out.returncode == 2, out.stderr
        line = out.stderr.strip().splitlines()[-1]
        assert line.startswith(f"prepwatch: {says}"), line
        assert line.count("prepwatch:") == 1 and "[Errno" not in line, line


# -- 9: the demo's sharded reads give torch a writable array (no NumPy warning) -----------
def test_demo_shard_reads_raise_no_numpy_warning(tmp_path) -> None:  # noqa: ANN001
    import warnings

    from prepwatch.demo.data import SyntheticShapes

    data = SyntheticShapes(size=16, augment=False, shard_dir=tmp_path / "shards")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch's "non-writable NumPy array" UserWarning
        try:
            x, _ = data[3]
        finally:
            for handle, _reads in data._handles.values():
                handle.close()
    assert x.shape == (3, 32, 32)


# -- 9: the webhook receiver's port is not a rank's (9400 + LOCAL_RANK) ------------------
def test_webhook_port_is_one_port_outside_the_ranks_range() -> None:
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    receiver = (root / "deploy" / "webhook" / "receiver.py").read_text()
    default = int(re.search(r'add_argument\("--port", type=int, default=(\d+)\)', receiver).group(1))
    am = yaml.safe_load((root / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    hooks = [h["url"] for r in am["receivers"] for h in r.get("webhook_configs", [])]
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    commands = [" ".join(map(str, s.get("command", []))) for s in compose["services"].values()]
    in_compose = [int(m) for c in commands for m in re.findall(r"receiver\.py.*--port (\d+)", c)]
    ports = {default, *in_compose, *(int(re.search(r":(\d+)/", u).group(1)) for u in hooks)}
    assert len(ports) == 1 and in_compose and hooks, ports
    port = ports.pop()
    assert not 9400 <= port < 9400 + 64, f"{port} is rank {port - 9400}'s default port"
    docs = (root / "docs" / "alerting.md").read_text() + (root / "docker-compose.yml").read_text()
    assert f"webhook :{port}" in docs or f"webhook receiver {port}" in docs


# -- 9: per-stage counts are those of timed samples (evaluation in the main process too) ---
def test_stage_counts_never_exceed_total_with_main_process_evaluation(watch) -> None:  # noqa: ANN001
    from datasets import TensorPairs
    from helpers import scrape, value

    train = DataLoader(TensorPairs(32, delay=0.001), batch_size=8, num_workers=2)
    evaluation = DataLoader(TensorPairs(24, delay=0.001), batch_size=8, num_workers=0)
    for _ in watch.loader(train):
        pass
    for _ in evaluation:  # fetched in the main process: its stage blocks run here
        pass
    samples = scrape(watch.url)
    count = "prepwatch_sample_fetch_seconds_count"
    assert value(samples, count, stage="total") == 32
    assert value(samples, count, stage="read") == 32  # not 32 + 24
