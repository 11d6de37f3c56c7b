"""`prepwatch demo --fault io`: the IO signals and the probe-io verdict show the storm."""

from __future__ import annotations

import argparse
import glob
import os
import tempfile

import torch
from helpers import scrape, value

from prepwatch.demo import fault_io


def test_fault_io_shows_in_open_latency_opens_bytes_per_open_and_verdict(watch, monkeypatch, capsys):
    torch.set_num_threads(1)
    monkeypatch.setattr(fault_io, "FILES", 1024)
    leftovers = set(glob.glob(os.path.join(tempfile.gettempdir(), "prepwatch-fault-io-*")))
    args = argparse.Namespace(seconds=4.0, workers=2, seed=0, batch_size=32)
    fault_io.main(watch, args)
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) <= 3
    assert "small-file bound" in out, out
    s = scrape(watch.url)
    opens = value(s, "prepwatch_file_opens_total")
    assert opens >= 100
    bytes_per_open = value(s, "prepwatch_read_bytes_total") / opens
    assert 2800 <= bytes_per_open <= 3073  # 3,073-byte files; a few opens in flight
    mean_open = value(s, "prepwatch_file_open_seconds_sum") / value(s, "prepwatch_file_open_seconds_count")
    assert mean_open >= fault_io.OPEN_MEDIAN_S * 0.9
    # Over 4 ms: the open histogram's mass sits in the metadata-latency buckets.
    fast = value(s, "prepwatch_file_open_seconds_bucket", le="0.00102")
    assert fast / opens < 0.05
    read = value(s, "prepwatch_sample_fetch_seconds_sum", stage="read")
    decode = value(s, "prepwatch_sample_fetch_seconds_sum", stage="decode")
    assert read > 10 * decode
    # The temporary dataset is gone, and the hook with it.
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "prepwatch-fault-io-*"))) == leftovers
    import builtins
    import io

    assert builtins.open is io.open and getattr(builtins.open, "__name__", "") == "open"
