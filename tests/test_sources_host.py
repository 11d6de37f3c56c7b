"""Process-tree and host sampler on real processes and the real /proc of this machine."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time

import psutil
import pytest
from helpers import parse, value
from prometheus_client import generate_latest

from prepwatch.context import Context
from prepwatch.identity import Identity
from prepwatch.sources.host import HostSampler, ProcessSampler, ProcessTree

CTX = mp.get_context("fork")


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x += 1


def _worker(path: str, burn: float, ready, done) -> None:
    _burn(burn)
    with open(path, "rb") as f:
        while f.read(1 << 16):
            pass
    ready.set()
    done.wait(20)


def _short_lived(burn: float) -> None:
    _burn(burn)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(refresh: float = 10.0, clock: Clock | None = None):
    ctx = Context.create(Identity(run="t"))
    tree = ProcessTree(lambda: [os.getpid()], refresh=refresh, clock=clock or Clock())
    return ctx, tree, ProcessSampler(ctx, tree)


def scrape(ctx: Context) -> dict:
    return parse(generate_latest(ctx.registry).decode())


def other_descendants() -> int:
    """Descendants this test did not start (a full run may keep e.g. a Prometheus fixture alive)."""
    return len(psutil.Process().children(recursive=True))


def test_workers_cpu_rss_and_reads_are_counted_apart_from_main(tmp_path):
    data = tmp_path / "blob"
    data.write_bytes(os.urandom(3 << 20))
    ctx, tree, sampler = make()
    base = other_descendants()
    sampler.sample()
    s0 = scrape(ctx)
    assert value(s0, "prepwatch_processes", role="main") == 1
    ready, done = CTX.Event(), CTX.Event()
    child = CTX.Process(target=_worker, args=(str(data), 0.3, ready, done))
    child.start()
    try:
        assert ready.wait(20)
        tree.mark_stale()  # a new worker: the agent finds it at the next rescan
        sampler.sample()
        s1 = scrape(ctx)
        assert value(s1, "prepwatch_processes", role="workers") == base + 1
        assert value(s1, "prepwatch_process_cpu_seconds_total", role="workers") >= 0.25
        assert value(s1, "prepwatch_process_resident_memory_bytes", role="workers") > 1e6
        assert value(s1, "prepwatch_process_read_bytes_total", role="workers") >= 3 << 20
        assert value(s1, "prepwatch_process_read_ops_total", role="workers") >= 48
        main_cpu = value(s1, "prepwatch_process_cpu_seconds_total", role="main")
        assert 0 < main_cpu < time.process_time() + 1
    finally:
        done.set()
        child.join(10)
    # The worker exited and was reaped: the counters must not go back.
    sampler.sample()
    s2 = scrape(ctx)
    for name, role in (
        ("prepwatch_process_cpu_seconds_total", "workers"),
        ("prepwatch_process_read_bytes_total", "workers"),
        ("prepwatch_process_cpu_seconds_total", "main"),
    ):
        assert value(s2, name, role=role) >= value(s1, name, role=role)
    assert value(s2, "prepwatch_processes", role="workers") == base


def test_worker_that_lives_and_dies_between_rescans_is_still_counted():
    clock = Clock()
    ctx, tree, sampler = make(refresh=1000.0, clock=clock)
    sampler.sample()
    scans = tree.scans
    before = value(scrape(ctx), "prepwatch_process_cpu_seconds_total", role="workers")
    child = CTX.Process(target=_short_lived, args=(0.3,))
    child.start()
    child.join(20)
    sampler.sample()
    assert tree.scans == scans  # no rescan: the tree never saw this worker
    after = value(scrape(ctx), "prepwatch_process_cpu_seconds_total", role="workers")
    assert after - before >= 0.25  # reaped children's CPU, read from the parent


def test_descendants_are_cached_and_rescanned_rarely_or_when_one_dies():
    clock = Clock()
    ctx, tree, sampler = make(refresh=10.0, clock=clock)
    base = other_descendants()
    ready, done = CTX.Event(), CTX.Event()
    child = CTX.Process(target=_worker, args=(os.devnull, 0.0, ready, done))
    child.start()
    try:
        assert ready.wait(20)
        for _ in range(20):  # 20 ticks inside one refresh period: one scan
            sampler.sample()
            clock.t += 0.4
        assert tree.scans == 1
        clock.t += 10.0
        sampler.sample()
        assert tree.scans == 2
    finally:
        done.set()
        child.join(10)
    sampler.sample()  # the cached worker is gone: noticed...
    sampler.sample()  # ...and rescanned at the next tick, not 10 s later
    assert tree.scans == 3
    assert value(scrape(ctx), "prepwatch_processes", role="workers") == base


def test_exited_main_process_keeps_its_cpu_counted():
    ready, done = CTX.Event(), CTX.Event()
    child = CTX.Process(target=_worker, args=(os.devnull, 0.2, ready, done))
    child.start()
    assert ready.wait(20)
    pids = [os.getpid(), child.pid]
    ctx = Context.create(Identity(run="t"))
    tree = ProcessTree(lambda: list(pids), clock=Clock())
    sampler = ProcessSampler(ctx, tree)
    sampler.sample()
    both = value(scrape(ctx), "prepwatch_process_cpu_seconds_total", role="main")
    done.set()
    child.join(10)
    pids.pop()  # the agent forgets the rank that exited
    sampler.sample()
    assert value(scrape(ctx), "prepwatch_process_cpu_seconds_total", role="main") >= both
    assert value(scrape(ctx), "prepwatch_processes", role="main") == 1


def test_process_io_unavailable_is_omitted_with_one_log_line(monkeypatch, caplog):
    def denied(self):
        raise psutil.AccessDenied(self.pid)

    monkeypatch.setattr(psutil.Process, "io_counters", denied)
    ctx, _, sampler = make()
    with caplog.at_level(logging.INFO, logger="prepwatch"):
        for _ in range(3):
            sampler.sample()
    s = scrape(ctx)
    assert value(s, "prepwatch_process_io_available") == 0.0
    assert value(s, "prepwatch_process_read_bytes_total") is None
    assert value(s, "prepwatch_process_cpu_seconds_total", role="main") > 0  # the rest goes on
    assert sum("IO counters are not available" in r.message for r in caplog.records) == 1


def test_host_cpu_memory_disk_pressure_from_the_real_machine():
    ctx = Context.create(Identity(run="t"))
    host = HostSampler(ctx)
    host.sample()
    _burn(0.1)
    time.sleep(0.05)
    host.sample()
    s = scrape(ctx)
    busy = sum(
        value(s, "prepwatch_host_cpu_seconds_total", mode=m) or 0 for m in ("user", "system")
    )
    assert busy > 0
    assert value(s, "prepwatch_host_cpu_seconds_total", mode="idle") > 0
    assert value(s, "prepwatch_host_cpu_seconds_total", mode="guest") is None  # inside user
    assert value(s, "prepwatch_host_cpus") == len(os.sched_getaffinity(0))
    assert 0 < value(s, "prepwatch_host_memory_available_bytes") <= value(
        s, "prepwatch_host_memory_total_bytes"
    )
    if psutil.disk_io_counters() is not None:
        assert value(s, "prepwatch_host_disk_available") == 1.0
        assert value(s, "prepwatch_host_disk_reads_total") >= 0
    if os.path.exists("/proc/pressure/io"):
        assert value(s, "prepwatch_host_pressure_stall_seconds_total", resource="io") >= 0


class NoDisks:
    """psutil as a container without /proc/diskstats shows it: everything but disks."""

    def __getattr__(self, name):
        return getattr(psutil, name)

    def disk_io_counters(self, perdisk=False):
        return None


def test_missing_disk_and_pressure_fields_are_skipped_with_one_line_each(tmp_path, caplog):
    ctx = Context.create(Identity(run="t"))
    host = HostSampler(ctx, psutil_module=NoDisks(), proc_root=str(tmp_path))
    with caplog.at_level(logging.INFO, logger="prepwatch"):
        for _ in range(3):
            host.sample()
    s = scrape(ctx)
    assert value(s, "prepwatch_host_disk_available") == 0.0
    assert value(s, "prepwatch_host_disk_read_bytes_total") is None
    assert value(s, "prepwatch_host_pressure_available") == 0.0
    assert value(s, "prepwatch_host_pressure_stall_seconds_total") is None
    assert value(s, "prepwatch_host_cpu_seconds_total", mode="idle") > 0
    messages = [r.message for r in caplog.records]
    assert sum("disk counters are not available" in m for m in messages) == 1
    assert sum("pressure stall information" in m for m in messages) == 1


def test_pressure_totals_are_parsed_in_seconds(tmp_path):
    (tmp_path / "pressure").mkdir()
    (tmp_path / "pressure" / "io").write_text(
        "some avg10=1.00 avg60=0.50 avg300=0.10 total=2500000\n"
        "full avg10=0.50 avg60=0.20 avg300=0.05 total=1000000\n"
    )
    ctx = Context.create(Identity(run="t"))
    HostSampler(ctx, proc_root=str(tmp_path)).sample()
    s = scrape(ctx)
    assert value(s, "prepwatch_host_pressure_stall_seconds_total", resource="io") == pytest.approx(2.5)
    assert value(s, "prepwatch_host_pressure_stall_seconds_total", resource="cpu") is None
