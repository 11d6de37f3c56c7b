"""Process-tree series per rank, for the node agent: each rank's CPU, RSS and IO carry its
``run`` and ``rank``.

A standalone ``prepwatch.start()`` watches only its own process, and its exporter adds the
process' ``run``/``rank`` to every series. The agent watches every rank registered with it,
from any number of jobs: summed into one ``{role}`` series, worker CPU could not be told
apart by job, and ``sum by (run)`` (docs/sources.md) would find no ``run`` at all. So the
agent keeps one :class:`ProcessSampler` per registered rank (its own small registry) and
renders each with that rank's identity. A rank that unregisters or dies takes its series
with it: a node agent serving jobs for months keeps no series of finished ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from prometheus_client.core import Metric

from prepwatch.metrics import Registry, sanitize_label_value
from prepwatch.metrics.registry import add_labels
from prepwatch.sources.host import ProcessSampler, ProcessTree

# pid -> {"run": ..., "rank": ...} of each registered rank
RankIdentities = Callable[[], dict[int, dict[str, str]]]


class _RankContext:
    """What a ProcessSampler needs of a context: a registry of its own."""

    def __init__(self) -> None:
        self.registry = Registry()


class RankProcessSampler:
    """One ProcessSampler per registered rank; series labelled with the rank's run and rank."""

    name = "process"

    def __init__(self, ranks: RankIdentities, *, psutil_module: Any = None) -> None:
        self._ranks = ranks
        self._ps = psutil_module
        # pid -> (labels, sampler, its tree, its registry)
        self._samplers: dict[int, tuple[dict[str, str], ProcessSampler, ProcessTree, Registry]] = {}

    def sample(self) -> None:
        ranks = self._ranks()
        for pid in [p for p in self._samplers if p not in ranks]:
            del self._samplers[pid]
        error: Optional[BaseException] = None
        for pid, identity in ranks.items():
            entry = self._samplers.get(pid)
            labels = {"run": identity["run"], "rank": identity["rank"]}
            if entry is None or entry[0] != labels:
                tree = ProcessTree(lambda pid=pid: [pid], psutil_module=self._ps)
                ctx = _RankContext()
                sampler = ProcessSampler(ctx, tree, psutil_module=self._ps)  # type: ignore[arg-type]
                entry = self._samplers[pid] = (labels, sampler, tree, ctx.registry)
            try:
                entry[1].sample()
            except Exception as exc:  # one rank's fault must not hide the others
                error = exc
        if error is not None:
            raise error  # counted once per tick by the sampler loop

    def job_pids(self) -> set[int]:
        """Every cached pid of every rank (for matching GPU compute processes)."""
        out: set[int] = set()
        for _, _, tree, _ in list(self._samplers.values()):
            out |= tree.job_pids()
        return out

    def collect(self) -> Iterator[Metric]:
        for labels, _, _, registry in list(self._samplers.values()):
            for metric in registry.collect():
                yield add_labels(metric, labels)

    def close(self) -> None:
        self._samplers.clear()


def read_rank_identities(ranks_dir: Union[str, Path]) -> dict[int, dict[str, str]]:
    """``{pid: {"run", "rank"}}`` from the identity files ranks write beside their sockets."""
    out: dict[int, dict[str, str]] = {}
    try:
        socks = list(Path(ranks_dir).glob("*.sock"))
    except OSError:
        return out
    for sock in socks:
        if not sock.stem.isdigit():
            continue
        try:
            identity = json.loads(sock.with_suffix(".json").read_text())
            out[int(sock.stem)] = {
                "run": sanitize_label_value(str(identity["run"])),
                "rank": str(int(identity["rank"])),
            }
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not yet written, or not a rank's: skipped this tick
    return out
