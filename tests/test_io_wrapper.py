"""The file the open hook hands back: the real file's attributes, every kind of read counted.

CountingFile has no ``__getattr__`` (it would slow every file down, see open_hook.py); the
real file's attributes are forwarded by name. These tests hold it to the real file, and
check what is counted per file (bytes read, not the position at close) and where the
per-file bytes land in the histogram, against real files.
"""

from __future__ import annotations

import builtins
import io
import mmap
from bisect import bisect_left

import pytest
from helpers import scrape, value

from prepwatch.hooks import worker_recorder as wr
from prepwatch.hooks.open_hook import CountingFile, instrument_open, timed_open
from prepwatch.metrics.buckets import FILE_BYTES_BUCKETS

ORIGINAL_OPEN = builtins.open
MODES = [("rb", -1), ("r", -1), ("rb", 0)]  # BufferedReader, TextIOWrapper, FileIO


@pytest.fixture(autouse=True)
def no_hook_left_behind():
    yield
    assert builtins.open is ORIGINAL_OPEN and io.open is ORIGINAL_OPEN


def per_file(url: str) -> dict[str, float]:
    s = scrape(url)
    out = {
        "files": value(s, "prepwatch_file_read_bytes_count") or 0.0,
        "file_bytes": value(s, "prepwatch_file_read_bytes_sum") or 0.0,
        "read_bytes": value(s, "prepwatch_read_bytes_total") or 0.0,
        "opens": value(s, "prepwatch_file_opens_total") or 0.0,
        "open_n": value(s, "prepwatch_file_open_seconds_count") or 0.0,
    }
    for le in FILE_BYTES_BUCKETS[:4]:
        out[f"le_{int(le)}"] = value(s, "prepwatch_file_read_bytes_bucket", le=str(le)) or 0.0
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


@pytest.mark.parametrize("mode,buffering", MODES)
def test_every_attribute_of_the_real_file_is_reachable_through_the_wrapper(
    watch, tmp_path, mode, buffering
):
    path = tmp_path / "a.txt"
    path.write_text("one\ntwo\n")
    with ORIGINAL_OPEN(path, mode, buffering) as bare, timed_open(path, mode, buffering) as f:
        assert isinstance(f, CountingFile)
        real = f.raw_file
        assert type(real) is type(bare)
        names = {n for n in dir(bare) if not n.startswith("__")} | {"name", "mode"}
        for name in sorted(names):
            assert hasattr(f, name), name
            got, want = getattr(f, name), getattr(real, name)
            if callable(want) and hasattr(want, "__self__"):
                if name in vars(CountingFile):  # a counting read, or close: ours
                    continue
                assert got.__self__ is real and got.__name__ == want.__name__, name
            else:
                assert got == want, name
        assert f.name == bare.name and f.mode == bare.mode
        assert f.fileno() != bare.fileno() and f.seekable() and f.readable()
        assert not f.closed
        if mode == "r":
            assert not hasattr(f, "peek") and not hasattr(f, "raw")  # not a text file's
            assert f.encoding == bare.encoding and f.buffer is real.buffer
        with pytest.raises(AttributeError):
            f.no_such_attribute  # noqa: B018
    assert f.closed


def test_bytes_read_are_counted_per_file_whatever_the_reads_and_seeks(watch, tmp_path):
    path = tmp_path / "data.bin"
    payload = bytes(range(256)) * 40  # 10,240 bytes, newlines included
    path.write_bytes(payload)

    def reads(f) -> int:  # a reader that seeks back, reads into buffers, and by lines
        n = len(f.read(100))
        f.seek(0)
        n += len(f.read(100))  # read again: counted again
        buf = bytearray(50)
        n += f.readinto(buf)
        n += len(f.read1(30))
        n += len(f.readline())
        f.seek(5000)  # skipped: not read, not counted
        n += sum(len(line) for line in f.readlines(10))
        n += sum(len(next(f)) for _ in range(3))  # iteration
        return n

    with ORIGINAL_OPEN(path, "rb") as bare:
        expected = reads(bare)
    assert 0 < expected < len(payload)
    before = per_file(watch.url)
    with instrument_open():
        with open(path, "rb") as f:
            assert reads(f) == expected
        with open(path, "rb", buffering=0) as g:  # FileIO: readall counted too
            assert len(g.read(10)) + len(g.readall()) == len(payload)
        h = open(path, "rb")  # noqa: SIM115 - read through mmap: not counted (documented)
        with h, mmap.mmap(h.fileno(), 0, access=mmap.ACCESS_READ) as m:
            assert m[:] == payload
    d = delta(before, per_file(watch.url))
    assert d["files"] == 3 and d["opens"] == 3 and d["open_n"] == 3
    assert d["file_bytes"] == expected + len(payload)
    assert d["read_bytes"] == expected + len(payload)


def test_each_files_bytes_land_in_the_bucket_a_search_would_pick(watch, tmp_path):
    sizes = [0, 1, 256, 257, 1024, 1025, 4096, 4097]
    for size in sizes:
        (tmp_path / f"{size}.bin").write_bytes(b"z" * size)
    before = per_file(watch.url)
    with instrument_open():
        for size in sizes:
            with open(tmp_path / f"{size}.bin", "rb") as f:
                assert len(f.read()) == size
    d = delta(before, per_file(watch.url))
    assert d["files"] == len(sizes) and d["file_bytes"] == sum(sizes)
    for le in FILE_BYTES_BUCKETS[:4]:  # cumulative: files of at most le bytes
        assert d[f"le_{int(le)}"] == sum(1 for s in sizes if s <= le), le


def test_the_bucket_table_is_the_search_over_the_bounds():
    table = wr.FILE_BYTES_BUCKET_BY_BITS
    probes = {0, 1, 2, 2**63 - 1, 2**100}
    for b in FILE_BYTES_BUCKETS:
        probes.update({int(b) - 1, int(b), int(b) + 1})
    for n in sorted(probes):
        assert table[(n - 1).bit_length()] == bisect_left(FILE_BYTES_BUCKETS, n), n
