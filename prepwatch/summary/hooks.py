"""The few lines Watch.stop() and `prepwatch run`/`demo` call; never raise into the job."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ENV_SUMMARY = "PREPWATCH_SUMMARY"  # a path for summary.json, or "0" for no summary


def _disabled() -> bool:
    return os.environ.get(ENV_SUMMARY, "") in ("0", "off", "false")


def on_watch_stop(watch: Any) -> None:
    """Summary of a process that served its own metrics (with an agent, the agent sums up)."""
    if _disabled() or watch.url is None:
        return
    try:
        from prepwatch.diagnosis.series import Snapshot, Window, from_metrics, labels_of
        from prepwatch.summary.build import emit

        raw = from_metrics(watch.ctx.registry.collect(), time.time())
        const = watch.ctx.identity.labels()  # the exporter adds them; the registry has not
        snap = Snapshot(
            raw.t, {(n, labels_of({**const, **dict(lab)})): v for (n, lab), v in raw.samples.items()}
        )
        steps = sum(v for (n, _), v in snap.samples.items() if n == "prepwatch_steps_total")
        if steps <= 0:
            return  # no training loop was watched: nothing to sum up
        start = max(
            (v for (n, _), v in snap.samples.items() if n == "prepwatch_start_timestamp_seconds"),
            default=snap.t,
        )
        env = os.environ.get(ENV_SUMMARY)
        path = (
            Path(env)
            if env
            else (Path(watch.artifacts_dir) / "summary.json" if watch.artifacts_dir else None)
        )
        emit(Window([snap], start=start), watch.ctx.identity.run, path, sys.stderr)
    except Exception as exc:
        watch.ctx.errors.report("summary", exc)


def add_summary_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--summary",
        metavar="PATH",
        default=None,
        help="where to write summary.json at the end (default: beside the agent's artifacts "
        f"with --state-dir, else a new file in the temporary directory; ${ENV_SUMMARY}=0 turns "
        "the summary off)",
    )


def default_path(agent: Any, run: str) -> Path:
    """Beside the artifacts when the agent's state dir outlives it; else a fresh temp file."""
    if not getattr(agent, "owns_state_dir", True):
        return Path(agent.state_dir) / "artifacts" / run / "summary.json"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.gettempdir()) / f"prepwatch-summary-{run}-{stamp}-{os.getpid()}.json"


class RunSummary:
    """Record an agent's series while its job runs; sum up when it ends."""

    def __init__(self, agent: Any, run: str, path: Optional[str]) -> None:
        from prepwatch.summary.recorder import SeriesRecorder

        self.run = run
        env = os.environ.get(ENV_SUMMARY)
        self.path = Path(path or env or default_path(agent, run))
        self.recorder = (
            None
            if _disabled()
            else SeriesRecorder(agent.collector.collect, on_error=agent.ctx.errors.report).start()
        )

    def finish(self) -> None:
        if self.recorder is None:
            return
        try:
            from prepwatch.summary.build import emit

            emit(self.recorder.stop(), self.run, self.path, sys.stderr)
        except Exception as exc:  # the job's exit status matters more than our summary
            print(f"prepwatch: no summary ({type(exc).__name__}: {exc})", file=sys.stderr)
