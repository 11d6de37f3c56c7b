"""Host and process-tree sampler (psutil): is the input side CPU-bound or waiting on storage?

Two roles, bounded labels: ``main`` (the training processes handed in by ``pids``) and
``workers`` (all their descendants: DataLoader workers, pin-memory threads are threads
so they count in main). Workers are summed as a group: one series per role, whatever
the number of workers or their restarts.

Cost: ``Process.children()`` scans all of /proc (~0.6-1.3 ms here), so descendants are
cached and rescanned every ``refresh`` seconds (10 by default) or as soon as a cached
one has died. Reading one process' counters costs ~50 us.

Counters stay monotonic when workers come and go:

* CPU: ``workers`` = reaped children's time of each main process (``children_user``/
  ``children_system``: exact for workers that exited and were joined) + the live
  descendants' own and reaped-children time. Per main process the value is kept as a
  high-water mark, so a worker caught between exit and reaping cannot make it dip or
  count twice. A worker that lives and dies between two rescans is still counted, via
  its parent's reaped-children time.
* IO (``/proc/<pid>/io``): exited children's IO is not added to the parent by the
  kernel, so each process' counters are followed by (pid, start time) and deltas are
  summed: the last interval of a worker that exits is lost (at most one tick).

RSS of forked workers counts pages shared with the main process again (copy-on-write);
it is an upper bound of what the workers add.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from prepwatch.context import Context

log = logging.getLogger("prepwatch")

CHILDREN_REFRESH_S = 10.0
ROLES = ("main", "workers")
PRESSURE_RESOURCES = ("cpu", "io", "memory")
NAN = float("nan")


def _psutil() -> Any:
    import psutil

    return psutil


class ProcessTree:
    """Cached psutil handles of the job's main processes and their descendants."""

    def __init__(
        self,
        pids: Callable[[], Iterable[int]],
        *,
        refresh: float = CHILDREN_REFRESH_S,
        psutil_module: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pids = pids
        self._refresh = refresh
        self._ps = psutil_module if psutil_module is not None else _psutil()
        self._clock = clock
        self._mains: dict[int, Any] = {}
        self._workers: dict[int, list[Any]] = {}
        self._next_scan = 0.0
        self._stale = True
        self.scans = 0  # children() scans done (each walks /proc)

    def update(self) -> None:
        """Follow the pid list; rescan descendants when due or when one died."""
        ps = self._ps
        wanted = {int(p) for p in self._pids()}
        for pid in list(self._mains):
            if pid not in wanted:
                del self._mains[pid]
                self._workers.pop(pid, None)
        for pid in wanted:
            if pid not in self._mains:
                try:
                    self._mains[pid] = ps.Process(pid)
                    self._stale = True
                except (ps.NoSuchProcess, ps.AccessDenied):
                    continue
        now = self._clock()
        if not (self._stale or now >= self._next_scan):
            return
        self._stale = False
        self._next_scan = now + self._refresh
        for pid, proc in list(self._mains.items()):
            try:
                if not proc.is_running():  # pid reused by another process
                    raise ps.NoSuchProcess(pid)
                self._workers[pid] = proc.children(recursive=True)
                self.scans += 1
            except (ps.NoSuchProcess, ps.ZombieProcess):
                del self._mains[pid]
                self._workers.pop(pid, None)
            except ps.AccessDenied:
                self._workers[pid] = []

    def mark_stale(self) -> None:
        """A cached process vanished: rescan at the next update."""
        self._stale = True

    def mains(self) -> list[tuple[int, Any]]:
        return list(self._mains.items())

    def workers(self, main_pid: int) -> list[Any]:
        return list(self._workers.get(main_pid, ()))

    def job_pids(self) -> set[int]:
        """Every cached pid of the job (for matching GPU compute processes)."""
        out = set(self._mains)
        for procs in list(self._workers.values()):
            out.update(p.pid for p in procs)
        return out


class _Once:
    """Log a line once per key."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._seen:
            self._seen.add(key)
            log.info(msg, *args)


class ProcessSampler:
    """CPU seconds, RSS and read IO of the job's main processes and of their workers."""

    name = "process"

    def __init__(self, ctx: Context, tree: ProcessTree, *, psutil_module: Any = None) -> None:
        self._tree = tree
        self._ps = psutil_module if psutil_module is not None else _psutil()
        self._once = _Once()
        self._cpu_hwm: dict[tuple[int, float], list[float]] = {}  # main key -> [main, workers]
        self._cpu_retired = [0.0, 0.0]
        self._io_last: dict[tuple[int, float], tuple[float, float, float]] = {}
        self._io_ok = True
        reg = ctx.registry
        role = ("role",)
        cpu = reg.counter(
            "prepwatch_process_cpu_seconds_total",
            "CPU time (user+system) of the training processes (role=main) and of all their "
            "descendants, DataLoader workers included (role=workers).", role,
        )
        rss = reg.gauge(
            "prepwatch_process_resident_memory_bytes",
            "Resident memory by role; forked workers' pages shared with main count again.", role,
        )
        count = reg.gauge("prepwatch_processes", "Processes watched, by role.", role)
        rchar = reg.counter(
            "prepwatch_process_read_bytes_total",
            "Bytes the processes read through read()-like calls (page-cache hits, pipes and "
            "sockets included; Linux rchar).", role,
        )
        storage = reg.counter(
            "prepwatch_process_storage_read_bytes_total",
            "Bytes the processes caused to be fetched from storage (Linux read_bytes; page-cache "
            "hits excluded).", role,
        )
        ops = reg.counter(
            "prepwatch_process_read_ops_total",
            "Read system calls made by the processes (Linux syscr).", role,
        )
        self._io_available = reg.gauge(
            "prepwatch_process_io_available",
            "1 when the processes' IO counters can be read here (0: platform or permissions).",
        ).labels()
        self._cpu = [cpu.labels(r) for r in ROLES]
        self._rss = [rss.labels(r) for r in ROLES]
        self._count = [count.labels(r) for r in ROLES]
        self._io_families = (rchar, storage, ops)
        self._io = [[fam.labels(r) for r in ROLES] for fam in self._io_families]
        self._io_available.set(1.0)
        for child in self._rss + self._count:
            child.set(NAN)  # unknown until the first tick

    def sample(self) -> None:
        ps = self._ps
        self._tree.update()
        rss = [0.0, 0.0]
        count = [0, 0]
        io = [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
        seen_cpu: set[tuple[int, float]] = set()
        seen_io: set[tuple[int, float]] = set()
        for pid, proc in self._tree.mains():
            try:
                key = (pid, proc.create_time())
                with proc.oneshot():
                    ct = proc.cpu_times()
                    rss[0] += proc.memory_info().rss
                    self._read_io(proc, key, 0, io, seen_io)
            except (ps.NoSuchProcess, ps.ZombieProcess):
                self._tree.mark_stale()
                continue
            except ps.AccessDenied as exc:
                self._once(f"denied:{pid}", "prepwatch: cannot read process %s (%s); it is skipped.",
                           pid, exc)
                continue
            count[0] += 1
            # Reaped descendants first: a worker reaped after this read is then missing from
            # both sums for one tick (a dip the high-water mark absorbs), never counted twice.
            workers_cpu = ct.children_user + ct.children_system
            for child in self._tree.workers(pid):
                try:
                    with child.oneshot():
                        cct = child.cpu_times()
                        child_rss = child.memory_info().rss
                        ckey = (child.pid, child.create_time())
                        self._read_io(child, ckey, 1, io, seen_io)
                except (ps.NoSuchProcess, ps.ZombieProcess):
                    self._tree.mark_stale()
                    continue
                except ps.AccessDenied:
                    continue
                workers_cpu += cct.user + cct.system + cct.children_user + cct.children_system
                rss[1] += child_rss
                count[1] += 1
            hwm = self._cpu_hwm.setdefault(key, [0.0, 0.0])
            hwm[0] = max(hwm[0], ct.user + ct.system)
            hwm[1] = max(hwm[1], workers_cpu)
            seen_cpu.add(key)
        for key in [k for k in self._cpu_hwm if k not in seen_cpu]:
            gone = self._cpu_hwm.pop(key)  # exited main process: its total stays counted
            self._cpu_retired[0] += gone[0]
            self._cpu_retired[1] += gone[1]
        for key in [k for k in self._io_last if k not in seen_io]:
            del self._io_last[key]
        for i in range(2):
            self._cpu[i].value = self._cpu_retired[i] + sum(h[i] for h in self._cpu_hwm.values())
            self._rss[i].set(rss[i])
            self._count[i].set(float(count[i]))
        if self._io_ok:
            for field in range(3):
                for i in range(2):
                    self._io[field][i].inc(io[field][i])

    def _read_io(
        self, proc: Any, key: tuple[int, float], role: int,
        io: list[list[float]], seen: set[tuple[int, float]],
    ) -> None:
        if not self._io_ok:
            return
        try:
            counters = proc.io_counters()
        except (AttributeError, NotImplementedError, self._ps.AccessDenied) as exc:
            self._io_off(f"{type(exc).__name__}: {exc}")
            return
        chars = getattr(counters, "read_chars", None)
        if chars is None:
            self._io_off("this platform has no read_chars")
            return
        now = (float(chars), float(counters.read_bytes), float(counters.read_count))
        last = self._io_last.get(key, (0.0, 0.0, 0.0))
        for field in range(3):
            io[field][role] += max(0.0, now[field] - last[field])
        self._io_last[key] = now
        seen.add(key)

    def _io_off(self, why: str) -> None:
        self._io_ok = False
        self._io_available.set(0.0)
        for fam in self._io_families:  # omitted, never a fake 0
            for r in ROLES:
                fam.remove(r)
        log.info(
            "prepwatch: process IO counters are not available here (%s); "
            "prepwatch_process_read_* are omitted.", why,
        )

    def close(self) -> None:
        pass


class HostSampler:
    """Host CPU time by mode, memory, disk IO and pressure stall time (Linux PSI)."""

    name = "host"

    def __init__(
        self, ctx: Context, *, psutil_module: Any = None, proc_root: str = "/proc",
    ) -> None:
        self._ps = psutil_module if psutil_module is not None else _psutil()
        self._proc = Path(proc_root)
        self._once = _Once()
        reg = ctx.registry
        self._cpu_fam = reg.counter(
            "prepwatch_host_cpu_seconds_total",
            "Host CPU time summed over all CPUs, by mode (as node_exporter's node_cpu_seconds_total).",
            ("mode",),
        )
        self._cpu_hwm: dict[str, float] = {}
        self._cpus = reg.gauge(
            "prepwatch_host_cpus", "CPUs this process may run on (affinity; else logical CPUs)."
        ).labels()
        self._mem_total = reg.gauge("prepwatch_host_memory_total_bytes", "Host memory.").labels()
        self._mem_avail = reg.gauge(
            "prepwatch_host_memory_available_bytes", "Host memory available without swapping."
        ).labels()
        self._disk_families = {
            "read_bytes": reg.counter(
                "prepwatch_host_disk_read_bytes_total", "Bytes read from the host's disks."
            ),
            "read_count": reg.counter(
                "prepwatch_host_disk_reads_total", "Reads completed by the host's disks."
            ),
            "write_bytes": reg.counter(
                "prepwatch_host_disk_written_bytes_total", "Bytes written to the host's disks."
            ),
            "busy_time": reg.counter(
                "prepwatch_host_disk_io_time_seconds_total",
                "Time the host's disks had IO in flight, summed over disks.",
            ),
        }
        self._disk = {k: fam.labels() for k, fam in self._disk_families.items()}
        self._disk_available = reg.gauge(
            "prepwatch_host_disk_available",
            "1 when host disk counters can be read here (0: e.g. a container without /proc/diskstats).",
        ).labels()
        self._pressure_fam = reg.counter(
            "prepwatch_host_pressure_stall_seconds_total",
            "Time some task stalled waiting for the resource (Linux PSI 'some' total): io rising "
            "while GPUs idle points at storage, cpu at decode.", ("resource",),
        )
        self._pressure_available = reg.gauge(
            "prepwatch_host_pressure_available",
            "1 when Linux pressure stall information (/proc/pressure) can be read here.",
        ).labels()
        self._mem_total.set(NAN)  # unknown until read: omitted, not 0
        self._mem_avail.set(NAN)
        self._disk_ok = True
        self._pressure_ok = True
        self._disk_available.set(1.0)
        self._pressure_available.set(1.0)
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = self._ps.cpu_count() or 0
        self._cpus.set(float(cpus) if cpus else NAN)

    def sample(self) -> None:
        self._sample_cpu()
        self._sample_memory()
        if self._disk_ok:
            self._sample_disk()
        if self._pressure_ok:
            self._sample_pressure()

    def _sample_cpu(self) -> None:
        times = self._ps.cpu_times()
        for mode in times._fields:
            if mode in ("guest", "guest_nice"):  # already inside user/nice on Linux
                continue
            value = float(getattr(times, mode))
            hwm = max(self._cpu_hwm.get(mode, 0.0), value)  # iowait may step back on Linux
            self._cpu_hwm[mode] = hwm
            self._cpu_fam.labels(mode).value = hwm

    def _sample_memory(self) -> None:
        try:
            vm = self._ps.virtual_memory()
        except Exception as exc:
            self._once("memory", "prepwatch: host memory is not available here (%s); skipped.", exc)
            return
        self._mem_total.set(float(vm.total))
        self._mem_avail.set(float(vm.available))

    def _sample_disk(self) -> None:
        why = None
        try:
            disk = self._ps.disk_io_counters(perdisk=False)
        except Exception as exc:  # RuntimeError / OSError where /proc/diskstats is absent
            disk, why = None, f"{type(exc).__name__}: {exc}"
        if disk is None:
            self._disk_ok = False
            self._disk_available.set(0.0)
            for fam in self._disk_families.values():
                fam.remove()
            log.info(
                "prepwatch: host disk counters are not available here (%s); "
                "prepwatch_host_disk_* are omitted.", why or "no disks listed",
            )
            return
        for field, child in self._disk.items():
            value = getattr(disk, field, None)
            if value is None:
                continue
            value = float(value) / 1000.0 if field == "busy_time" else float(value)  # ms -> s
            child.value = max(child.value, value)

    def _sample_pressure(self) -> None:
        found = False
        for resource in PRESSURE_RESOURCES:
            try:
                text = (self._proc / "pressure" / resource).read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("some "):
                    for part in line.split()[1:]:
                        if part.startswith("total="):
                            child = self._pressure_fam.labels(resource)
                            child.value = max(child.value, int(part[6:]) / 1e6)  # us -> s
                            found = True
        if not found:
            self._pressure_ok = False
            self._pressure_available.set(0.0)
            log.info(
                "prepwatch: Linux pressure stall information (%s/pressure) is not available "
                "here; prepwatch_host_pressure_stall_seconds_total is omitted.", self._proc,
            )

    def close(self) -> None:
        pass
