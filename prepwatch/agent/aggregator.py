"""Collect snapshots from every registered rank at scrape time and merge them."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from prepwatch.agent import exposition, snapshot_validation
from prepwatch.agent.merge import ClassMerger
from prepwatch.agent.rank_reader import RankDropped, rank_chunks
from prepwatch.exporter.snapshot import Family, families_of

Source = tuple[dict[str, str], list[Family]]

GONE_MEMORY_SECONDS = 600.0  # how long a vanished rank keeps exporting prepwatch_rank_up 0
# Why a rank is down (the `reason` label of prepwatch_rank_up 0): a bounded set.
EXITED, SOCKET_GONE = "exited", "socket_gone"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _registered_identity(sock: Path) -> Optional[dict[str, Any]]:
    """The identity a rank wrote beside its socket at registration, if readable."""
    try:
        identity = json.loads(sock.with_suffix(".json").read_text())
        return {"run": str(identity["run"]), "rank": str(identity["rank"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RankAggregator:
    """Scrape-time fan-in from ``<state>/ranks/*.sock``.

    A socket that refuses connections belongs to a process that died without
    cleaning up (SIGKILL, OOM killer): it is removed, and the rank is exported as
    ``prepwatch_rank_up 0`` for ``GONE_MEMORY_SECONDS`` so the loss is visible.
    """

    def __init__(
        self,
        ranks_dir: Path,
        on_error: Callable[[str, BaseException], None],
        timeout: float = 2.0,
        local: Optional[tuple[dict[str, str], Any]] = None,
    ) -> None:
        """``local``: the agent's own (labels, collector), merged in so that a family
        both export (build info, internal errors) appears once, as the format requires."""
        self.ranks_dir = Path(ranks_dir)
        self._local = local
        self._on_error = on_error
        self._timeout = timeout
        self._known: dict[str, dict[str, Any]] = {}  # socket name -> identity
        self._gone: dict[tuple[str, str], tuple[float, str]] = {}  # (run, rank) -> (when, why)
        self._down: dict[tuple[str, str], str] = {}  # this scrape: registered, not served -> why
        self._drops: dict[str, int] = {}  # reason -> ranks left out of a scrape, so far
        # socket name -> its checker (remembers the blocks it accepted at the last scrape)
        self._checkers: dict[str, snapshot_validation.SnapshotChecker] = {}
        self._merger = ClassMerger()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="prepwatch-agg")
        # One scrape at a time (an HA pair of Prometheus servers scrapes concurrently):
        # _known and _gone are updated by the scrape and its fetch threads.
        self._collect_lock = threading.Lock()

    def pids(self) -> list[int]:
        """Pids of the registered ranks (socket names), for the process-tree sources."""
        try:
            return [int(p.stem) for p in self.ranks_dir.glob("*.sock") if p.stem.isdigit()]
        except OSError:
            return []

    def _fetch(self, path: Path) -> Optional[tuple[dict[str, Any], list[Family]]]:
        try:
            return self._checkers[path.name].decode(rank_chunks(path, self._timeout))
        except RankDropped as exc:
            # Hung, foreign or malformed: this rank is down for this scrape, by name when
            # the agent knows it; the others are served as usual.
            identity = self._known.get(path.name) or _registered_identity(path)
            if identity is not None:
                self._down[(str(identity["run"]), str(identity["rank"]))] = exc.reason
            self._drops[exc.reason] = self._drops.get(exc.reason, 0) + 1
            if exc.reason != "timeout":  # a busy rank is not a fault of prepwatch's
                self._on_error("aggregator", exc)
            return None
        except (ConnectionRefusedError, FileNotFoundError):
            pid = int(path.stem) if path.stem.isdigit() else -1
            if pid > 0 and not _pid_alive(pid):
                identity = self._known.pop(path.name, None) or _registered_identity(path)
                for stale in (path, path.with_suffix(".json")):
                    try:
                        stale.unlink()
                    except FileNotFoundError:
                        pass
                if identity is not None:
                    self._gone[(identity["run"], str(identity["rank"]))] = (time.time(), EXITED)
            return None
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            return None  # the rank is exiting or busy: skip it this scrape, nothing is wrong here
        except Exception as exc:
            self._on_error("aggregator", exc)
            return None

    def render_text(self, names: Optional[set[str]] = None) -> bytes:
        """The node's exposition in the text format: the ranks' own rendered lines,
        checked and concatenated, class series merged per node (agent/merge.py)."""
        return exposition.render(self._assemble(names))

    def collect(self) -> Iterator[Metric]:
        """The same exposition as metric objects, for in-process readers (the summary's
        series recorder, the demo's status line)."""
        yield from exposition.metrics_of(self._assemble(None))

    def _assemble(self, names: Optional[set[str]]) -> list[Family]:
        with self._collect_lock:
            sources, own = self._gather()
            merged = self._merger.collapse(sources)
        return exposition.assemble(merged, own, names)

    def _gather(self) -> tuple[list[Source], list[Metric]]:
        """(families of every source, the agent's own metrics about its ranks)."""
        try:
            paths = sorted(self.ranks_dir.glob("*.sock"))
        except OSError as exc:
            self._on_error("aggregator", exc)
            paths = []
        self._down = {}
        self._notice_vanished_sockets({p.name for p in paths})
        self._checkers = {p.name: self._checkers.get(p.name) or snapshot_validation.SnapshotChecker()
                          for p in paths}
        # One rank (a single-GPU node, a test) is read on this thread: no hand-off to wait for.
        results = list(self._pool.map(self._fetch, paths)) if len(paths) > 1 else \
            [self._fetch(p) for p in paths]
        sources: list[Source] = []
        if self._local is not None:
            labels, collector = self._local
            try:
                sources.append((labels, families_of(collector, labels)))
            except Exception as exc:
                self._on_error("aggregator", exc)
        up = GaugeMetricFamily(
            "prepwatch_rank_up",
            "1 while a registered rank answers; 0 (with a reason) while it does not: exited "
            "without unregistering, timeout, socket_gone, invalid_snapshot, foreign_peer, ...",
            labels=["run", "rank", "reason"],
        )
        live: set[tuple[str, str]] = set()
        for path, result in zip(paths, results):
            if result is None:
                continue
            identity, families = result
            self._known[path.name] = identity
            labels = {"run": str(identity["run"]), "rank": str(identity["rank"])}
            key = (labels["run"], labels["rank"])
            if key in live:
                # Two processes claim one identity (two jobs of one script, a launcher
                # prepwatch cannot read): their series would collide, so serve the first.
                self._on_error("aggregator", ValueError(
                    f"two processes report as run={key[0]!r} rank={key[1]}; only the first is "
                    "served: give each job its own PREPWATCH_RUN (or prepwatch.start(run=...)) "
                    "and each rank its RANK"))
                continue
            live.add(key)
            sources.append((labels, families))
        for run, rank in sorted(live):
            up.add_metric([run, rank, ""], 1.0)
            self._gone.pop((run, rank), None)
        now = time.time()
        down = dict(self._down)
        for key, (since, why) in list(self._gone.items()):
            if now - since > GONE_MEMORY_SECONDS:
                del self._gone[key]
            elif key not in live:
                down.setdefault(key, why)
        for (run, rank), why in sorted(down.items()):
            if (run, rank) not in live:
                up.add_metric([run, rank, why], 0.0)
        own: list[Metric] = [up]
        drops = CounterMetricFamily(
            "prepwatch_agent_rank_drops",
            "Times a registered rank was left out of a scrape, by reason (timeout: it did not "
            "answer within the deadline; the others: what it sent was refused).",
            labels=["reason"],
        )
        for reason, count in sorted(self._drops.items()):
            drops.add_metric([reason], count)
        own.append(drops)
        own.append(GaugeMetricFamily(
            "prepwatch_agent_ranks", "Ranks currently registered with this agent.", value=len(live)
        ))
        return sources, own

    def _notice_vanished_sockets(self, present: set[str]) -> None:
        """A rank whose socket disappeared while its process lives (the state directory was
        deleted, a cleaner removed it) can no longer be reached: it is lost, not finished.
        One whose process is gone too unregistered itself (a clean exit)."""
        for name in [n for n in self._known if n not in present]:
            identity = self._known.pop(name)
            pid = int(name.split(".")[0]) if name.split(".")[0].isdigit() else -1
            said_bye = (self.ranks_dir / name).with_suffix(".bye").exists()
            if pid > 0 and _pid_alive(pid) and not said_bye:
                self._gone[(str(identity["run"]), str(identity["rank"]))] = (time.time(), SOCKET_GONE)
        try:
            byes = list(self.ranks_dir.glob("*.bye"))
        except OSError:
            return
        for bye in byes:  # read or not, a goodbye of an exited process has served its turn
            if not (bye.stem.isdigit() and _pid_alive(int(bye.stem))):
                try:
                    bye.unlink()
                except OSError:
                    pass

    def remove_dead(self) -> None:
        """Delete the sockets (and identity files) of ranks whose process is gone."""
        try:
            paths = list(self.ranks_dir.glob("*.sock"))
        except OSError:
            return
        for path in paths:
            if path.stem.isdigit() and not _pid_alive(int(path.stem)):
                for stale in (path, path.with_suffix(".json")):
                    try:
                        stale.unlink()
                    except OSError:
                        pass

    def close(self) -> None:
        self._pool.shutdown(wait=False)
