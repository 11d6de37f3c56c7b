"""probe-io on real folders of real files.

Local disk is fast, so storage behaviour a shared filesystem would add is added in
``open_file`` (the hook the probe reads through), each emulating one mechanism:
per-open metadata latency, a shared bandwidth cap, per-reader transfer latency. The
files, the listing, the stat/open/read syscalls and the timings are real.
"""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from prepwatch.cli.main import main as cli_main
from prepwatch.tools import probe_io
from prepwatch.tools.page_cache import first_page_resident
from prepwatch.tools.probe_io import _resident, probe


def make_tree(root, n: int, size: tuple[int, int], folders: int = 4, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes = []
    for i in range(n):
        d = root / f"d{i % folders}"
        d.mkdir(exist_ok=True)
        s = int(rng.integers(*size)) if size[1] > size[0] else size[0]
        (d / f"{i:05d}.bin").write_bytes(rng.bytes(s))
        sizes.append(s)
    return sizes


def slow_open(delay: float):
    """Each open waits ``delay`` first, as on a filesystem whose metadata server is remote."""

    def opener(path, flags):
        time.sleep(delay)
        return os.open(path, flags)

    def open_file(path):
        return open(path, "rb", buffering=0, opener=opener)

    return open_file


class Throttled:
    """A file whose reads share one link of ``rate`` bytes/s, and/or whose first byte
    comes ``first_byte`` seconds late (an object store's time to first byte)."""

    def __init__(self, f, link: threading.Lock | None, rate: float, first_byte: float) -> None:
        self.f, self.link, self.rate, self.first_byte = f, link, rate, first_byte

    def readinto(self, buf):
        if self.first_byte:
            time.sleep(self.first_byte)
            self.first_byte = 0.0
        n = self.f.readinto(buf)
        if n and self.link is not None:
            with self.link:  # one shared pipe: readers queue for it
                time.sleep(n / self.rate)
        return n

    def fileno(self):
        return self.f.fileno()

    def close(self):
        self.f.close()


def test_small_files_behind_slow_metadata_are_small_file_bound(tmp_path):
    make_tree(tmp_path, 160, (1000, 8000))
    report = probe(str(tmp_path), readers=(1, 4), sample=16, open_file=slow_open(0.003))
    v = report.verdict
    assert v.kind == "small_file_bound", v.sentence
    assert v.sentence.startswith("160 files, median ")
    assert "p99 open" in v.sentence and "at 4 readers" in v.sentence
    assert "64 MB–1 GB" in v.sentence
    cold4 = report.pass_at(4, "cold")
    assert cold4.open.p50 >= 0.003
    assert cold4.meta_share > 0.5
    assert cold4.files == 16 and cold4.errors == 0
    # Each level reads its own files, so both cold passes are a first touch.
    assert report.pass_at(1, "cold").first_touch and cold4.first_touch
    one, four = report.pass_at(1, "cold"), cold4
    assert four.files_per_second > 2 * one.files_per_second  # latency overlaps across readers


def test_large_files_on_local_disk_are_not_small_file_bound(tmp_path):
    make_tree(tmp_path, 20, (2_000_000, 2_000_001))
    report = probe(str(tmp_path), readers=(1, 2), sample=8)
    assert report.verdict.kind not in ("small_file_bound", "open_latency_spikes"), report.verdict
    one = report.pass_at(1, "cold")
    assert one.meta_share < 0.5  # moving 2 MB costs more than finding the file
    assert one.first_touch and one.bytes == 8 * 2_000_000
    assert report.listing["size_p50_bytes"] == 2_000_000


def test_shared_bandwidth_cap_is_bandwidth_bound(tmp_path):
    make_tree(tmp_path, 32, (200_000, 200_001))
    link = threading.Lock()
    report = probe(
        str(tmp_path), readers=(1, 4), sample=6,
        # 20 ms per file on the link: the probe's own per-file overhead, which overlaps
        # across readers on a busy machine, stays a small share of it
        open_file=lambda p: Throttled(open(p, "rb", buffering=0), link, 10e6, 0.0),  # noqa: SIM115
    )
    assert report.verdict.kind == "bandwidth_bound", report.verdict.sentence
    assert "more DataLoader workers will not help" in report.verdict.sentence
    one, four = report.pass_at(1, "cold"), report.pass_at(4, "cold")
    assert four.bytes_per_second < 1.5 * one.bytes_per_second


def test_slow_transfer_that_scales_says_use_more_workers(tmp_path):
    make_tree(tmp_path, 32, (50_000, 50_001))
    report = probe(
        str(tmp_path), readers=(1, 4), sample=8,
        open_file=lambda p: Throttled(open(p, "rb", buffering=0), None, 1.0, 0.015),  # noqa: SIM115
    )
    # The time is spent per file waiting for the first byte, not in metadata; it overlaps.
    assert report.verdict.kind == "latency_bound", report.verdict
    assert "readers scale" in report.verdict.sentence
    assert "use at least 4 DataLoader workers" in report.verdict.sentence
    assert report.pass_at(4, "cold").files_per_second > 2 * report.pass_at(1, "cold").files_per_second


def test_open_spikes_under_load_are_called_out(tmp_path):
    make_tree(tmp_path, 80, (300_000, 300_001))
    state = {"n": 0}
    lock = threading.Lock()

    def spiky(path):
        with lock:
            state["n"] += 1
            spike = state["n"] % 5 == 0  # one open in five queues behind a busy server
        delay = 0.03 if spike else 0.0

        def opener(p, flags):
            time.sleep(delay)
            return os.open(p, flags)

        # each reader has its own 10 MB/s link: reads dominate the per-file time
        return Throttled(open(path, "rb", buffering=0, opener=opener), threading.Lock(), 10e6, 0.0)

    report = probe(str(tmp_path), readers=(1, 4), sample=10, open_file=spiky)
    assert report.verdict.kind == "open_latency_spikes", report.verdict.sentence
    assert report.pass_at(4, "cold").open.p99 >= 0.02


def test_listing_counts_sizes_and_does_not_follow_symlinked_folders(tmp_path):
    (tmp_path / "data").mkdir()
    sizes = make_tree(tmp_path / "data", 50, (10, 1000))
    (tmp_path / "data" / "empty").mkdir()
    os.symlink(tmp_path / "data" / "d0", tmp_path / "data" / "loop")
    listing = probe_io.list_files(str(tmp_path / "data"))
    summary = listing.summary()
    assert summary["files"] == 50
    assert summary["dirs"] == 6  # root, d0..d3, empty
    assert summary["total_bytes"] == sum(sizes)
    assert summary["size_p50_bytes"] == float(np.percentile(sizes, 50))
    assert summary["size_max_bytes"] == max(sizes)
    assert probe_io.list_files(str(tmp_path / "data"), max_files=7).truncated


def test_few_files_share_one_sample_and_say_so(tmp_path):
    make_tree(tmp_path, 10, (100, 200))
    report = probe(str(tmp_path), readers=(1, 4), sample=50)
    assert report.sample_per_level == 10
    assert report.pass_at(1, "cold").first_touch
    assert not report.pass_at(4, "cold").first_touch
    assert any("only the 1-reader cold pass is a first touch" in n for n in report.notes)


def test_evict_makes_the_first_touch_cold_where_the_kernel_allows(tmp_path):
    make_tree(tmp_path, 24, (64_000, 64_001))
    path = next(p for p in tmp_path.rglob("*.bin"))
    probe_io._evict([str(path)])
    with open(path, "rb", buffering=0) as f:
        state = _resident(f)
    if state is None or state:
        pytest.skip("this filesystem cannot drop or report page-cache residency")
    report = probe(str(tmp_path), readers=(1, 2), sample=8, evict=True)
    assert report.pass_at(1, "cold").cached_share <= 0.5
    assert report.pass_at(1, "warm").cached_share is None  # only first touches are checked
    plain = probe(str(tmp_path), readers=(1, 2), sample=8, seed=0)  # same files, now cached
    assert plain.pass_at(1, "cold").cached_share == 1.0
    assert any("already in the page cache" in n for n in plain.notes)


def test_asking_about_the_page_cache_does_not_read_the_file(tmp_path):
    """A residency check that starts readahead (preadv2 RWF_NOWAIT) answers its own question."""
    make_tree(tmp_path, 1, (256_000, 256_001))
    path = next(p for p in tmp_path.rglob("*.bin"))
    with open(path, "rb", buffering=0) as f:
        if _resident(f) is None:
            pytest.skip("this platform cannot report page-cache residency")
        f.read()
        assert _resident(f) is True  # just read: cached
    probe_io._evict([str(path)])
    with open(path, "rb", buffering=0) as f:
        if _resident(f):
            pytest.skip("this filesystem cannot drop a file from the page cache")
        deadline = time.monotonic() + 0.3  # long enough for readahead IO to land
        while time.monotonic() < deadline:
            assert _resident(f) is False
    assert probe_io._resident(object()) is None  # an opener's object without a file descriptor


def _answer_as_nobody(fd: int):
    """first_page_resident(fd) asked by a child that dropped to uid/gid 65534 (root only)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            try:
                os.setgid(65534)
                os.setuid(65534)
            except OSError:  # root without CAP_SETUID (some containers)
                os.write(write, b"cannot drop")
            else:
                os.write(write, repr(first_page_resident(fd)).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as f:
        return f.read().decode()


@pytest.mark.skipif(not hasattr(os, "fork") or os.geteuid() != 0, reason="needs root to drop to another uid")
def test_a_file_the_kernel_will_not_tell_us_about_is_unknown_not_cached(tmp_path):
    """Linux answers mincore truly only to a file's owner or a writer; to anyone else it says
    "cached" (a shared read-only dataset would read 100% cached, every cold pass "optimistic")."""
    make_tree(tmp_path, 1, (64_000, 64_001))
    path = next(p for p in tmp_path.rglob("*.bin"))
    path.chmod(0o644)
    probe_io._evict([str(path)])
    fd = os.open(path, os.O_RDONLY)
    try:
        if first_page_resident(fd) is not False:
            pytest.skip("this filesystem cannot drop or report page-cache residency")
        answer = _answer_as_nobody(fd)
        if answer == "cannot drop":
            pytest.skip("this root cannot change its uid")
        assert answer == "None"  # not the owner, may not write: unknown
        path.chmod(0o666)
        assert _answer_as_nobody(fd) == "False"  # may write: the kernel tells the truth
    finally:
        os.close(fd)


def test_unknown_residency_is_said_not_guessed(tmp_path):
    make_tree(tmp_path, 20, (100, 200))
    class NoFd:  # an opener's file object with no descriptor: the cache cannot be asked
        def __init__(self, path):
            self.f = open(path, "rb", buffering=0)  # noqa: SIM115

        def readinto(self, buf):
            return self.f.readinto(buf)

        def close(self):
            self.f.close()

    opaque = probe(str(tmp_path), readers=(1,), sample=8, open_file=NoFd)
    assert opaque.pass_at(1, "cold").cached_share is None
    assert any("in the page cache is unknown" in n for n in opaque.notes)
    plain = probe(str(tmp_path), readers=(1,), sample=8)
    if plain.pass_at(1, "cold").cached_share is not None:
        assert not any("in the page cache is unknown" in n for n in plain.notes)


def test_cli_json_and_text(tmp_path, capsys):
    make_tree(tmp_path, 20, (100, 2000))
    assert cli_main(["probe-io", str(tmp_path), "--readers", "1,2", "--sample", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["listing"]["files"] == 20
    assert [(p["readers"], p["kind"]) for p in doc["passes"]] == [
        (1, "cold"), (1, "warm"), (2, "cold"), (2, "warm")
    ]
    assert doc["verdict"]["kind"] in ("not_storage_bound", "small_file_bound", "latency_bound",
                                      "bandwidth_bound", "open_latency_spikes")
    assert doc["thresholds"]["meta_share"] == 0.5
    assert cli_main(["probe-io", str(tmp_path), "--readers", "2", "--sample", "3"]) == 0
    out = capsys.readouterr().out
    assert "20 files" in out and "verdict: " in out and "readers" in out


def test_cli_errors_name_the_fix(tmp_path, capsys):
    assert cli_main(["probe-io", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert cli_main(["probe-io", str(tmp_path), "--readers", "1,x"]) == 2
    assert "comma-separated" in capsys.readouterr().err
    assert cli_main(["probe-io", str(tmp_path), "--sample", "0"]) == 2
    assert cli_main(["probe-io", str(tmp_path)]) == 1  # empty folder: nothing to judge
    assert "no readable files" in capsys.readouterr().out
