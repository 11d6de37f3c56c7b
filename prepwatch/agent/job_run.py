"""One run label for one job under ``prepwatch run``: the agent's own series follow the job's.

``prepwatch run -- python train.py`` names the run from the command (``train``) or
``--run``, and passes it to the job as ``$PREPWATCH_RUN``; but a job that calls
``prepwatch.start(run="my-cnn")`` reports as ``my-cnn``, and the agent's node-level series
(host, GPU) would then carry another run than the job's, so ``sum by (run)`` could not
join them. The ranks' own identity is what the job's series carry, so the agent takes the
run of the job's first registered rank (the lowest rank), and keeps it for the rest of its
life; until a rank registers, the command's name stands in.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Optional

from prepwatch.metrics.registry import LabelledView
from prepwatch.sources.rank_processes import read_rank_identities

log = logging.getLogger("prepwatch")


class JobRun:
    """``{"run": ...}`` for the agent's own series: the job's run once a rank registered."""

    def __init__(self, ranks_dir: Path, fallback: str) -> None:
        self._ranks_dir = Path(ranks_dir)
        self._fallback = fallback
        self._found: Optional[str] = None
        self._lock = threading.Lock()

    @property
    def run(self) -> str:
        with self._lock:
            if self._found is None:
                ranks = read_rank_identities(self._ranks_dir)
                if ranks:
                    first = min(ranks.values(), key=lambda r: int(r["rank"]))
                    self._found = first["run"]
                    if self._found != self._fallback:
                        log.info(
                            "prepwatch: the job reports as run %r (prepwatch.start(run=...) or its "
                            "environment), not %r: the agent's series carry %r too",
                            self._found, self._fallback, self._found,
                        )
            return self._found or self._fallback

    def __call__(self) -> dict[str, str]:
        return {"run": self.run}


def agent_local(registry: Any, ranks_dir: Path, run: Optional[str]) -> tuple[dict[str, str], Any]:
    """The agent's own (labels, collector) for the aggregator: labelled with the job's run
    under ``prepwatch run``; node-level (no run) under a shared ``prepwatch agent``, where
    only the per-rank process series carry a run (their rank's)."""
    if not run:
        return {}, registry
    return {}, LabelledView(registry, JobRun(ranks_dir, run))
