"""Measure a dataset directory's storage the way a DataLoader meets it (``prepwatch probe-io``).

A DataLoader with one file per sample pays, per sample: a path lookup and open (the
metadata cost), then the read (the transfer). When files are small, the first
dominates, and on network or parallel filesystems it grows with the number of
concurrent readers (a metadata storm). This module lists the directory (count and
size distribution), then reads a random sample of files with 1, 4, 16... concurrent
readers (threads: the syscalls release the GIL, so the storage sees real
concurrency, as with worker processes), first touch ("cold") then again ("warm"),
and timing stat, open and read of each file.

Cold means first touched by this probe. Whether the data was already in the page
cache is checked per file, without reading it (``mincore``, see ``page_cache``), and
reported; ``evict=True`` first drops the sampled files' cached data
(``posix_fadvise(DONTNEED)``); metadata (dentries, inodes) cannot be dropped without
root, so cold opens on a local disk may still be warm.

The verdict thresholds are in ``THRESHOLDS`` below, each with its reason.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from prepwatch.tools.page_cache import first_page_resident

# -- Thresholds -----------------------------------------------------------------------
# Per-file metadata cost (stat + open, median) from which one-file-per-sample becomes the
# limit: page-cached metadata costs ~5-20 us and a cold local-SSD lookup ~0.1-0.3 ms;
# 1 ms and more is a network/parallel filesystem round trip or a loaded metadata server.
# At 1 ms, 16 workers top out near 16k files/s before moving a byte, and tails grow
# with concurrency.
META_SLOW_S = 0.001
# Metadata time (stat + open) as a share of all per-file time (sum over files): from
# one half on, the files are too small for this storage: most time goes to finding
# them, not reading them.
META_SHARE = 0.5
# p99 open at the highest parallelism from which opens "spike": a 20 ms stall per
# sample, hit by ~1 in 100 samples, lands in most batches of 64+ samples and shows as
# the intermittent GPU-utilization drops of a metadata storm.
OPEN_P99_SPIKE_S = 0.020
# Parallel efficiency (rate at k readers / (k x rate at 1 reader)) under which readers
# contend; above it, adding DataLoader workers still buys throughput.
SCALING_OK = 0.5
# A "bandwidth bound" verdict needs throughput that barely grows with readers (under
# 1.5x from 1 to k) and stays under 1 GB/s: above that, decode (JPEG ~100-200 MB/s per
# core) caps a loader before storage does on common nodes.
BANDWIDTH_GROWTH = 1.5
FAST_BYTES_PER_S = 1e9
# Per-file read time (median) that counts as slow even for large files.
READ_SLOW_S = 0.010
# Cold/warm per-file time ratio (medians) worth a note: the first epoch pays it.
COLD_WARM_NOTE = 3.0
# Share of first-touch files already in page cache above which cold numbers are flagged.
CACHED_NOTE = 0.9
# Below this per-file time the probe's own overhead (threads, GIL, a few syscalls: tens
# of us) and the host's CPU count limit how readers scale, not the storage: no
# contention note then.
PROBE_NOISE_S = 0.001
MIN_FILES_PER_LEVEL = 8  # fewer distinct files than this per level: levels share files

THRESHOLDS = {
    "meta_slow_s": META_SLOW_S, "meta_share": META_SHARE, "open_p99_spike_s": OPEN_P99_SPIKE_S,
    "scaling_ok": SCALING_OK, "bandwidth_growth": BANDWIDTH_GROWTH,
    "fast_bytes_per_s": FAST_BYTES_PER_S, "read_slow_s": READ_SLOW_S,
}
DEFAULT_READERS = (1, 4, 16)
DEFAULT_SAMPLE = 200
DEFAULT_MAX_READ_BYTES = 64 * 1024 * 1024
CHUNK = 1 << 20

OpenFile = Callable[[str], Any]


def _open_unbuffered(path: str) -> Any:
    return open(path, "rb", buffering=0)


# -- listing ----------------------------------------------------------------------------
@dataclass
class Listing:
    root: str
    files: list[tuple[str, int]]
    dirs: int
    seconds: float
    truncated: bool
    errors: int

    def summary(self) -> dict[str, Any]:
        sizes = np.array([s for _, s in self.files], dtype=np.float64)
        out: dict[str, Any] = {
            "files": len(self.files), "dirs": self.dirs, "list_seconds": self.seconds,
            "truncated": self.truncated, "errors": self.errors,
            "total_bytes": float(sizes.sum()) if sizes.size else 0.0,
        }
        if sizes.size:
            for name, q in (("p10", 10), ("p50", 50), ("p90", 90), ("p99", 99)):
                out[f"size_{name}_bytes"] = float(np.percentile(sizes, q))
            out["size_max_bytes"] = float(sizes.max())
        return out


def list_files(root: str, max_files: Optional[int] = None) -> Listing:
    """Every regular file under ``root`` (symlinked files followed, symlinked dirs not)."""
    t0 = time.perf_counter()
    files: list[tuple[str, int]] = []
    dirs = errors = 0
    stack = [root]
    truncated = False
    while stack and not truncated:
        current = stack.pop()
        dirs += 1
        try:
            entries = list(os.scandir(current))
        except OSError:
            errors += 1
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file():
                    files.append((entry.path, entry.stat().st_size))
                    if max_files is not None and len(files) >= max_files:
                        truncated = True
                        break
            except OSError:
                errors += 1
    files.sort()
    return Listing(root, files, dirs, time.perf_counter() - t0, truncated, errors)


# -- one pass -----------------------------------------------------------------------------
@dataclass
class Latency:
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Latency:
        if not values:
            return cls(float("nan"), float("nan"), float("nan"))
        a = np.asarray(values, dtype=np.float64)
        return cls(float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max()))


@dataclass
class PassResult:
    readers: int
    kind: str  # "cold" (first touch by this probe) or "warm" (second read)
    first_touch: bool
    files: int
    bytes: int
    errors: int
    wall_seconds: float
    files_per_second: float
    bytes_per_second: float
    stat: Latency
    open: Latency
    read: Latency
    total: Latency
    meta_share: float  # (stat + open) / (stat + open + read), summed over files
    cached_share: Optional[float] = None  # data already in page cache before first touch


def _resident(f: Any) -> Optional[bool]:
    """Is the open file's first page in the page cache? None when the kernel cannot say."""
    try:
        return first_page_resident(f.fileno())
    except (OSError, AttributeError, ValueError):  # an opener's object without a real fd
        return None


def _read_one(
    path: str, open_file: OpenFile, buf: memoryview, limit: int, check_cache: bool
) -> tuple[float, float, float, int, Optional[bool]]:
    clock = time.perf_counter
    t0 = clock()
    os.stat(path)
    t1 = clock()
    f = open_file(path)
    t2 = clock()
    try:
        cached = _resident(f) if check_cache else None
        t3 = clock()
        n = 0
        while n < limit:
            k = f.readinto(buf[: min(len(buf), limit - n)])
            if not k:
                break
            n += k
    finally:
        f.close()
    t4 = clock()  # read time includes close (a network filesystem may answer it late)
    return t1 - t0, t2 - t1, t4 - t3, n, cached


def measure(
    paths: Sequence[str],
    readers: int,
    *,
    kind: str = "cold",
    first_touch: bool = True,
    open_file: Optional[OpenFile] = None,
    max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
) -> PassResult:
    """Read ``paths`` with ``readers`` concurrent threads; time stat, open, read per file."""
    open_file = open_file or _open_unbuffered
    check_cache = kind == "cold"
    lock = threading.Lock()
    it = iter(paths)
    results: list[list[tuple[float, float, float, int, Optional[bool]]]] = [[] for _ in range(readers)]
    errors = [0] * readers
    barrier = threading.Barrier(readers + 1)

    def work(slot: int) -> None:
        buf = memoryview(bytearray(min(CHUNK, max(max_read_bytes, 1))))
        out = results[slot]
        barrier.wait()
        while True:
            with lock:
                path = next(it, None)
            if path is None:
                return
            try:
                out.append(_read_one(path, open_file, buf, max_read_bytes, check_cache))
            except OSError:
                errors[slot] += 1

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(readers)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = max(time.perf_counter() - t0, 1e-9)
    rows = [r for out in results for r in out]
    stat = [r[0] for r in rows]
    opens = [r[1] for r in rows]
    reads = [r[2] for r in rows]
    nbytes = sum(r[3] for r in rows)
    meta_sum = sum(stat) + sum(opens)
    all_sum = meta_sum + sum(reads)
    known = [r[4] for r in rows if r[4] is not None]
    return PassResult(
        readers=readers, kind=kind, first_touch=first_touch and kind == "cold",
        files=len(rows), bytes=nbytes, errors=sum(errors), wall_seconds=wall,
        files_per_second=len(rows) / wall, bytes_per_second=nbytes / wall,
        stat=Latency.of(stat), open=Latency.of(opens), read=Latency.of(reads),
        total=Latency.of([a + b + c for a, b, c in zip(stat, opens, reads)]),
        meta_share=meta_sum / all_sum if all_sum > 0 else float("nan"),
        cached_share=(sum(known) / len(known)) if known else None,
    )


def _evict(paths: Sequence[str]) -> None:
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                os.fdatasync(fd)  # dirty pages (freshly written files) cannot be dropped
            except OSError:  # read-only filesystem: nothing dirty to write anyway
                pass
            advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


# -- the probe -----------------------------------------------------------------------------
@dataclass
class Verdict:
    # small_file_bound | open_latency_spikes | bandwidth_bound | latency_bound |
    # not_storage_bound | no_data
    kind: str
    sentence: str


@dataclass
class Report:
    root: str
    listing: dict[str, Any]
    readers: list[int]
    sample_per_level: int
    passes: list[PassResult]
    verdict: Verdict = field(default_factory=lambda: Verdict("no_data", ""))
    notes: list[str] = field(default_factory=list)

    def pass_at(self, readers: int, kind: str) -> Optional[PassResult]:
        for p in self.passes:
            if p.readers == readers and p.kind == kind:
                return p
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root, "listing": self.listing, "readers": self.readers,
            "sample_per_level": self.sample_per_level,
            "passes": [asdict(p) for p in self.passes],
            "verdict": asdict(self.verdict), "notes": list(self.notes),
            "thresholds": dict(THRESHOLDS),
        }


def parse_readers(text: str) -> list[int]:
    """``"1,4,16"`` -> ``[1, 4, 16]``; raises ValueError naming the fix."""
    try:
        levels = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--readers takes comma-separated integers like 1,4,16, got {text!r}") from None
    if not levels or levels[0] < 1 or levels[-1] > 1024:
        raise ValueError(f"--readers values must be between 1 and 1024, got {text!r}")
    return levels


def probe(
    root: str,
    *,
    readers: Sequence[int] = DEFAULT_READERS,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    open_file: Optional[OpenFile] = None,
    max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
    max_files: Optional[int] = None,
    evict: bool = False,
) -> Report:
    """List ``root``, read a sample at each parallelism level, and judge.

    ``open_file(path)`` opens a file for binary reading (default: ``open(path, "rb",
    buffering=0)``); the demo passes one that adds storage latency.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"probe-io: {root} is not a directory; pass the dataset's folder")
    if sample < 1:
        raise ValueError(f"--sample must be >= 1, got {sample}")
    if max_read_bytes < 1:
        raise ValueError(f"max_read_bytes must be >= 1, got {max_read_bytes}")
    levels = sorted(set(int(r) for r in readers))
    if not levels or levels[0] < 1:
        raise ValueError(f"readers must be positive integers, got {readers!r}")
    listing = list_files(root, max_files)
    report = Report(root, listing.summary(), levels, 0, [])
    paths = [p for p, _ in listing.files]
    if not paths:
        report.verdict = Verdict("no_data", f"{root}: no readable files found")
        return report
    rng = random.Random(seed)
    picked = rng.sample(paths, min(len(paths), sample * len(levels)))
    per_level = min(sample, len(picked) // len(levels))
    shared = per_level < MIN_FILES_PER_LEVEL
    if shared:  # too few files for a fresh set per level: all levels read the same ones
        per_level = min(sample, len(picked))
    report.sample_per_level = per_level
    for i, k in enumerate(levels):
        chunk = picked[:per_level] if shared else picked[i * per_level:(i + 1) * per_level]
        if evict:
            _evict(chunk)
        first = not shared or i == 0
        for kind in ("cold", "warm"):
            report.passes.append(measure(
                chunk, k, kind=kind, first_touch=first, open_file=open_file,
                max_read_bytes=max_read_bytes,
            ))
    if shared and len(levels) > 1:
        report.notes.append(
            f"only {len(paths)} files: every level reads the same ones, so only the "
            f"{levels[0]}-reader cold pass is a first touch"
        )
    if listing.truncated:
        report.notes.append(f"listing stopped at {len(paths):,} files (max_files)")
    judge(report)
    return report


def judge(report: Report) -> Verdict:
    """Set ``report.verdict`` and add notes; see the thresholds at the top of the module."""
    lst = report.listing
    levels = report.readers
    top, low = levels[-1], levels[0]
    cold = report.pass_at(top, "cold")
    if cold is None or cold.files == 0:
        report.verdict = Verdict("no_data", f"{report.root}: no file could be read")
        return report.verdict
    base = report.pass_at(low, "cold")
    warm = report.pass_at(top, "warm")
    head = f"{lst['files']:,} files, median {_size(lst.get('size_p50_bytes', 0))}"
    meta_p50 = cold.stat.p50 + cold.open.p50
    growth_files = cold.files_per_second / base.files_per_second if base and base is not cold else 1.0
    growth_bytes = cold.bytes_per_second / base.bytes_per_second if base and base.bytes_per_second else 1.0
    efficiency = growth_files / (top / low) if top > low else 1.0
    at = f"at {top} reader{'s' if top > 1 else ''}"
    if cold.meta_share >= META_SHARE and (meta_p50 >= META_SLOW_S or cold.open.p99 >= OPEN_P99_SPIKE_S):
        verdict = Verdict(
            "small_file_bound",
            f"{head}; p99 open {_dur(cold.open.p99)} {at}: small-file bound; shard into large "
            "sequential files (64 MB–1 GB, e.g. WebDataset or MDS)",
        )
    elif cold.open.p99 >= OPEN_P99_SPIKE_S:
        verdict = Verdict(
            "open_latency_spikes",
            f"{head}; p99 open {_dur(cold.open.p99)} {at} while reads dominate: open latency spikes "
            "under parallel load; shard into large files or stage the dataset on local disk",
        )
    elif (
        top > low and cold.meta_share < META_SHARE and growth_bytes < BANDWIDTH_GROWTH
        and cold.bytes_per_second < FAST_BYTES_PER_S
    ):
        verdict = Verdict(
            "bandwidth_bound",
            f"{head}; {_rate(cold.bytes_per_second)} {at} vs {_rate(base.bytes_per_second)} at "  # type: ignore[union-attr]
            f"{low}: bandwidth bound; more DataLoader workers will not help: cache the data "
            "locally or store smaller samples (resized, compressed)",
        )
    elif meta_p50 >= META_SLOW_S or cold.read.p50 >= READ_SLOW_S:
        if efficiency >= SCALING_OK:
            verdict = Verdict(
                "latency_bound",
                f"{head}; {_dur(cold.total.p50)} per file but readers scale "
                f"({cold.files_per_second:,.0f} files/s {at}): use at least {top} DataLoader "
                "workers; sharding into large files removes the per-file cost",
            )
        else:
            verdict = Verdict(
                "latency_bound",
                f"{head}; {_dur(cold.total.p50)} per file and readers contend "
                f"({cold.files_per_second:,.0f} files/s {at}, {growth_files:.1f}x of 1 reader): "
                "stage the dataset on local disk or shard into large files",
            )
    else:
        verdict = Verdict(
            "not_storage_bound",
            f"{head}; {cold.files_per_second:,.0f} files/s, {_rate(cold.bytes_per_second)} {at}, "
            f"p99 open {_dur(cold.open.p99)}: storage is not the bottleneck up to that rate; if the "
            "job starves, look at worker CPU (decode) and num_workers",
        )
    report.verdict = verdict
    if warm is not None and warm.total.p50 > 0 and cold.first_touch:
        ratio = cold.total.p50 / warm.total.p50
        if ratio >= COLD_WARM_NOTE:
            report.notes.append(
                f"first touch is {ratio:.1f}x slower than a re-read (p50 per file): the first epoch, "
                "and every epoch of a dataset larger than the page cache, pays it"
            )
    if cold.cached_share is not None and cold.cached_share >= CACHED_NOTE:
        report.notes.append(
            f"{cold.cached_share:.0%} of the first-touch files were already in the page cache: "
            "cold numbers are optimistic (--evict drops their data first; metadata stays cached)"
        )
    if cold.first_touch and cold.files and cold.cached_share is None:
        report.notes.append(
            "whether the first-touch files were already in the page cache is unknown (Linux tells "
            "only a file's owner or a process that may write it; some files cannot be mapped to "
            "ask): cold numbers may be optimistic"
        )
    if (
        top > low and efficiency < SCALING_OK and verdict.kind != "latency_bound"
        and base is not None and base.total.p50 >= PROBE_NOISE_S
    ):
        report.notes.append(
            f"files/s grows only {growth_files:.1f}x from {low} to {top} readers: readers contend "
            "somewhere on the storage path"
        )
    return verdict


# -- formatting ------------------------------------------------------------------------------
def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{n:.0f} B"


def _rate(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e6:,.1f} MB/s"


def _dur(seconds: float) -> str:
    if seconds != seconds:
        return "n/a"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1e3:.1f} ms" if seconds < 0.01 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds * 1e6:.0f} µs"


def format_text(report: Report) -> str:
    lst = report.listing
    lines = [f"prepwatch probe-io {report.root}"]
    if lst.get("files"):
        lines.append(
            f"files: {lst['files']:,} in {lst['dirs']:,} folders, {_size(lst['total_bytes'])} "
            f"(listed in {lst['list_seconds']:.2f} s); size p10 {_size(lst['size_p10_bytes'])}, "
            f"median {_size(lst['size_p50_bytes'])}, p90 {_size(lst['size_p90_bytes'])}, "
            f"max {_size(lst['size_max_bytes'])}"
        )
    if report.passes:
        lines.append(f"sampled {report.sample_per_level} files per level; latency p50 / p99")
        header = (
            f"{'readers':>7}  {'pass':<4}  {'files/s':>9}  {'MB/s':>8}  {'stat':>17}  "
            f"{'open':>17}  {'read':>17}  {'in cache':>8}"
        )
        lines.append(header)
        for p in report.passes:
            cached = "" if p.cached_share is None else f"{p.cached_share:.0%}"
            lines.append(
                f"{p.readers:>7}  {p.kind:<4}  {p.files_per_second:>9,.0f}  "
                f"{p.bytes_per_second / 1e6:>8,.1f}  {_pair(p.stat):>17}  {_pair(p.open):>17}  "
                f"{_pair(p.read):>17}  {cached:>8}"
                + (f"  ({p.errors} errors)" if p.errors else "")
            )
    lines.append(f"verdict: {report.verdict.sentence}")
    for note in report.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _pair(lat: Latency) -> str:
    return f"{_dur(lat.p50)} / {_dur(lat.p99)}"
