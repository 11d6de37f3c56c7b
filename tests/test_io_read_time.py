"""Per-file read time (open to close) and bytes per file: storms whose cost is in the read.

A slow read behind a fast open is made real with a FIFO: the writer is already waiting
when the dataset opens it (open returns at once), then delivers the bytes in chunks with
pauses, as a network filesystem or a cold object store does. Counts are checked in real
DataLoader workers too.
"""

from __future__ import annotations

import builtins
import gc
import io
import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import scrape, value
from torch.utils.data import DataLoader, Dataset

from prepwatch.hooks.open_hook import instrument_open, timed_open

ORIGINAL_OPEN = builtins.open
CHUNK, CHUNKS, PAUSE = 512, 4, 0.03  # 2 KiB per file, >= 90 ms from open to close


def read_counts(url: str) -> dict[str, float]:
    s = scrape(url)
    return {k: value(s, name) or 0.0 for k, name in (
        ("n", "prepwatch_file_read_seconds_count"), ("sec", "prepwatch_file_read_seconds_sum"),
        ("bytes_n", "prepwatch_file_read_bytes_count"), ("bytes", "prepwatch_file_read_bytes_sum"),
        ("open_sec", "prepwatch_file_open_seconds_sum"), ("opens", "prepwatch_file_opens_total"),
        ("le_4k", None),
    ) if name} | {"le_4k": value(s, "prepwatch_file_read_bytes_bucket", le="4096.0") or 0.0}


@pytest.fixture(autouse=True)
def no_hook_left_behind():
    yield
    assert builtins.open is ORIGINAL_OPEN and io.open is ORIGINAL_OPEN


def slow_fifo(path: Path) -> threading.Thread:
    """A FIFO whose writer waits for the reader, then dribbles CHUNKS x CHUNK bytes."""
    if not path.exists():
        os.mkfifo(path)

    def write() -> None:
        with ORIGINAL_OPEN(path, "wb", buffering=0) as w:  # blocks until the reader opens
            for _ in range(CHUNKS):
                time.sleep(PAUSE)
                w.write(b"x" * CHUNK)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_slow_read_behind_a_fast_open_is_timed_open_to_close(watch, tmp_path):
    before = read_counts(watch.url)
    files = 4
    for i in range(files):
        writer = slow_fifo(tmp_path / f"f{i}")
        with timed_open(tmp_path / f"f{i}", "rb") as f:
            data = b""
            while chunk := f.read(CHUNK):
                data += chunk
        assert len(data) == CHUNK * CHUNKS
        writer.join(10)
    after = read_counts(watch.url)
    d = {k: after[k] - before[k] for k in after}
    assert d["n"] == files and d["bytes_n"] == files
    assert d["bytes"] == files * CHUNK * CHUNKS and d["le_4k"] == files
    assert d["sec"] >= files * CHUNKS * PAUSE * 0.9  # the reads' waiting is in it
    assert d["open_sec"] < d["sec"] / 3  # ... and not in the open


def test_each_file_is_recorded_once_however_it_ends(watch, tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"y" * 3000)
    before = read_counts(watch.url)
    with instrument_open():
        with open(path, "rb") as f:  # with-block
            f.read(1000)
        f.close()  # closing again records nothing more
        g = open(path, "rb")  # noqa: SIM115 - closed by hand on purpose
        g.read()
        g.close()
        with warnings.catch_warnings():  # the unclosed file warns, as it should
            warnings.simplefilter("ignore", ResourceWarning)
            h = open(path, "rb")  # noqa: SIM115 - never closed: recorded when collected
            h.read(10)
            del h
            gc.collect()
        with open(path, "rb"):  # opened, nothing read: a file of 0 bytes read
            pass
    after = read_counts(watch.url)
    d = {k: after[k] - before[k] for k in after}
    assert d["n"] == 4 and d["bytes_n"] == 4
    assert d["bytes"] == 1000 + 3000 + 10
    assert d["opens"] == 4


class FileSamples(Dataset):
    def __init__(self, files: list[tuple[str, int]]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> int:
        with open(self.files[i][0], "rb") as f:
            return len(f.read())


def test_dataloader_workers_report_per_file_time_and_bytes(watch, tmp_path):
    rng = np.random.default_rng(3)
    files = []
    for i in range(32):
        size = int(rng.integers(100, 20000))
        (tmp_path / f"{i}.bin").write_bytes(rng.bytes(size))
        files.append((str(tmp_path / f"{i}.bin"), size))
    torch.set_num_threads(1)
    hook = instrument_open()
    try:
        loader = watch.loader(DataLoader(FileSamples(files), batch_size=8, num_workers=2,
                                         multiprocessing_context="fork"))
        before = read_counts(watch.url)
        got = [n for batch in loader for n in batch.tolist()]
    finally:
        hook.close()
    after = read_counts(watch.url)
    assert sorted(got) == sorted(s for _, s in files)
    assert after["n"] - before["n"] == len(files)
    assert after["bytes"] - before["bytes"] == sum(s for _, s in files)
    assert after["sec"] - before["sec"] > 0
