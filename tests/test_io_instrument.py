"""IO instrumentation: timed_open and the open hook, in-process and in real DataLoader workers."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import scrape, value
from torch.utils.data import DataLoader, Dataset

from prepwatch.hooks import open_hook as pw_io
from prepwatch.hooks.open_hook import CountingFile, instrument_open, timed_open
from prepwatch.internal_threads import mark_internal_thread

ORIGINAL_OPEN = builtins.open


def io_counts(url: str) -> dict[str, float]:
    s = scrape(url)
    return {
        "opens": value(s, "prepwatch_file_opens_total"),
        "bytes": value(s, "prepwatch_read_bytes_total"),
        "open_n": value(s, "prepwatch_file_open_seconds_count"),
        "open_sum": value(s, "prepwatch_file_open_seconds_sum"),
    }


def write_files(root: Path, n: int, seed: int = 0) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        size = int(rng.integers(100, 5000))
        path = root / f"{i:04d}.bin"
        path.write_bytes(rng.bytes(size))
        out.append((str(path), size))
    return out


@pytest.fixture(autouse=True)
def no_hook_left_behind():
    yield
    assert builtins.open is ORIGINAL_OPEN and io.open is ORIGINAL_OPEN


def test_timed_open_records_each_open_and_the_bytes_read(watch, tmp_path):
    files = write_files(tmp_path, 5)
    before = io_counts(watch.url)
    total = 0
    for i, (path, size) in enumerate(files):
        with timed_open(path, "rb") as f:
            assert isinstance(f, CountingFile)
            if i % 2:
                data = f.read()
            else:
                buf = bytearray(size + 10)
                n = f.readinto(buf)
                data = bytes(buf[:n])
            assert len(data) == size
            total += size
    with timed_open(tmp_path / "out.txt", "w") as f:  # an open, no bytes read
        f.write("x")
    with timed_open(tmp_path / "out.txt") as f:  # text mode: characters
        assert list(f) == ["x"]
    after = io_counts(watch.url)
    assert after["opens"] - before["opens"] == 7
    assert after["open_n"] - before["open_n"] == 7
    assert after["bytes"] - before["bytes"] == total + 1
    assert 0 < after["open_sum"] - before["open_sum"] < 1.0


def test_timed_open_is_plain_open_when_prepwatch_is_not_active(monkeypatch, tmp_path):
    monkeypatch.setattr(pw_io, "_recorder", lambda: None)
    path = tmp_path / "a"
    path.write_bytes(b"abc")
    with timed_open(path, "rb") as f:
        assert type(f) is io.BufferedReader
        assert f.read() == b"abc"
    with pytest.raises(FileNotFoundError):
        timed_open(tmp_path / "missing", "rb")


def test_open_hook_records_read_opens_of_paths_and_nothing_else(watch, tmp_path):
    files = write_files(tmp_path, 3)
    before = io_counts(watch.url)
    with instrument_open():
        assert builtins.open is not ORIGINAL_OPEN
        for path, _ in files:
            with open(path, "rb") as f:
                f.read()
        assert Path(files[0][0]).read_bytes()  # pathlib goes through io.open
        with open(tmp_path / "log.txt", "w") as f:  # a write: not the dataset's
            f.write("hello")
        with open(files[0][0], "r+b") as f:  # read-write: not counted either
            f.read(1)
        fd = os.open(files[1][0], os.O_RDONLY)
        with open(fd, "rb") as f:  # a file descriptor, not a path lookup
            f.read()
        seen_in_thread = []

        def internal():
            mark_internal_thread()
            with open(files[2][0], "rb") as f:
                seen_in_thread.append(type(f))

        t = threading.Thread(target=internal)
        t.start()
        t.join()
        assert seen_in_thread == [io.BufferedReader]
    after = io_counts(watch.url)
    assert after["opens"] - before["opens"] == 4
    assert after["bytes"] - before["bytes"] == sum(s for _, s in files) + files[0][1]


def test_hook_calls_nest_and_never_clobber_a_later_patch():
    a = instrument_open()
    b = instrument_open()
    a.close()
    assert pw_io.open_hook_active()
    b.close()
    b.close()
    assert not pw_io.open_hook_active()
    with instrument_open():
        def theirs(*args, **kwargs):
            return ORIGINAL_OPEN(*args, **kwargs)

        builtins.open = theirs  # another tool patches on top of ours
    try:
        assert builtins.open is theirs  # we left theirs alone
    finally:
        builtins.open = ORIGINAL_OPEN


def test_library_code_works_through_the_hook(watch, tmp_path):
    from PIL import Image

    png = tmp_path / "img.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(png)
    npy = tmp_path / "arr.npy"
    np.save(npy, np.arange(1000))
    pkl = tmp_path / "obj.pkl"
    pkl.write_bytes(pickle.dumps({"a": list(range(100))}))
    txt = tmp_path / "lines.txt"
    txt.write_text("one\ntwo\nthree\n")
    before = io_counts(watch.url)
    with instrument_open():
        with Image.open(png) as im:
            assert np.asarray(im).reshape(-1).tolist() == list(range(48))
        assert np.load(npy).sum() == sum(range(1000))
        with open(pkl, "rb") as f:
            assert pickle.load(f)["a"][-1] == 99
        with open(txt) as f:
            assert [line.strip() for line in f] == ["one", "two", "three"]
            assert f.closed is False
        assert f.closed
    after = io_counts(watch.url)
    assert after["opens"] - before["opens"] == 4
    read = after["bytes"] - before["bytes"]
    sizes = sum(p.stat().st_size for p in (npy, pkl, txt))
    assert sizes <= read <= sizes + 2 * png.stat().st_size


class FileSamples(Dataset):
    """One real file per sample, read with plain open() as dataset code does."""

    def __init__(self, files: list[tuple[str, int]]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with open(self.files[i][0], "rb") as f:
            data = f.read()
        return torch.tensor(len(data))


def install_hook(worker_id: int) -> None:
    instrument_open()


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_report_opens_and_bytes(watch, tmp_path, context):
    files = write_files(tmp_path, 40, seed=1)
    torch.set_num_threads(1)
    hook = instrument_open()
    try:
        dl = DataLoader(
            FileSamples(files), batch_size=8, num_workers=2 if context == "fork" else 1,
            multiprocessing_context=context,
            worker_init_fn=install_hook if context == "spawn" else None,
        )
        loader = watch.loader(dl)
        before = io_counts(watch.url)
        got = []
        for _ in range(2):
            for batch in loader:
                got.extend(batch.tolist())
    finally:
        hook.close()
    after = io_counts(watch.url)
    assert sorted(got) == sorted([s for _, s in files] * 2)
    assert after["opens"] - before["opens"] == 80
    assert after["bytes"] - before["bytes"] == 2 * sum(s for _, s in files)
    assert after["open_n"] - before["open_n"] == 80
