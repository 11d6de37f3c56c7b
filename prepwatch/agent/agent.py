"""The agent process: HTTP endpoint, rank fan-in, and node-level sources."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from prepwatch._version import __version__
from prepwatch.agent.aggregator import RankAggregator
from prepwatch.agent.job_run import agent_local
from prepwatch.context import Context
from prepwatch.exporter.http import MetricsServer
from prepwatch.identity import Identity
from prepwatch.sources import start_sources
from prepwatch.sources.rank_processes import read_rank_identities
from prepwatch.statedir import UnsafeDirectoryError, create_new, private_dir

log = logging.getLogger("prepwatch")
ENV_AGENT_DIR = "PREPWATCH_AGENT_DIR"


def default_state_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path(tempfile.gettempdir())
    return base / f"prepwatch-{os.getuid()}"


def prepare_state_dir(path: Path) -> Path:
    """Create ``path`` (0700) with ranks/ and artifacts/; fail clearly when unwritable, and
    refuse them when another user owns them or can write them (see prepwatch.statedir)."""
    option = "--state-dir (or state_dir=...)"
    try:
        for folder in (path, path / "ranks", path / "artifacts"):
            private_dir(folder, option)
        probe = path / ".write-test"
        probe.unlink(missing_ok=True)
        create_new(probe, b"ok")
        probe.unlink()
    except UnsafeDirectoryError:
        raise
    except OSError as exc:
        raise PermissionError(
            f"prepwatch: state directory {path} is not writable ({exc.strerror}); pass another "
            "with --state-dir (or state_dir=...)"
        ) from None
    return path


class Agent:
    """Serves ``/metrics`` for every rank registered under ``state_dir``.

    ``run`` names the single job this agent serves (``prepwatch run``); its own
    node-level series then carry the job's ``run`` label (its ranks', see
    :mod:`prepwatch.agent.job_run`) so they join with the ranks'. Process series are
    kept per registered rank and carry that rank's ``run`` and ``rank``.
    """

    def __init__(
        self,
        state_dir: Optional[Path] = None,
        *,
        host: str = "127.0.0.1",
        port: int = 9400,
        run: Optional[str] = None,
        sources: bool = True,
        sample_interval: float = 1.0,
        basic_auth: Optional[tuple[str, str]] = None,
        tls: Optional[tuple[str, str]] = None,
        owns_state_dir: bool = False,
        watch_processes: bool = True,
    ) -> None:
        self.owns_state_dir = owns_state_dir
        if state_dir is None:
            state_dir = Path(tempfile.mkdtemp(prefix="prepwatch-"))
            self.owns_state_dir = True
        self.state_dir = prepare_state_dir(Path(state_dir))
        self.run = run
        self.ctx = Context.create(Identity(run=run or "agent"))
        reg = self.ctx.registry
        reg.gauge("prepwatch_build_info", "prepwatch version.", ["version"]).labels(__version__).set(1)
        ranks_dir = self.state_dir / "ranks"
        self.aggregator = RankAggregator(
            ranks_dir, self.ctx.errors.report, local=agent_local(reg, ranks_dir, run),
        )
        self._sources = (
            # watch_processes=False: the ranks' pids belong to another PID namespace (a node
            # DaemonSet) and would name other processes here; GPUs are then all exported.
            list(start_sources(
                self.ctx, pids=self.aggregator.pids if watch_processes else list,
                interval=sample_interval,
                ranks=(lambda: read_rank_identities(ranks_dir)) if watch_processes else None,
            ))
            if sources else []
        )
        self.collector = self.aggregator
        try:
            self.server = MetricsServer(
                self.collector, host=host, port=port,
                artifacts_root=self.state_dir / "artifacts",
                basic_auth=basic_auth, tls=tls, port_option="--port",
                on_error=self.ctx.errors.report,
            )
        except BaseException:
            self._close_parts()
            raise

    @property
    def url(self) -> str:
        return self.server.url

    def env(self) -> dict[str, str]:
        """Environment a job needs to report here."""
        env = {ENV_AGENT_DIR: str(self.state_dir)}
        if self.run:
            env["PREPWATCH_RUN"] = self.run
        return env

    def _close_parts(self) -> None:
        for source in self._sources:
            try:
                source.close()
            except Exception as exc:
                self.ctx.errors.report("sources", exc)
        self.aggregator.close()

    def close(self) -> None:
        self.server.close()
        self._close_parts()
        if self.owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        # A shared node agent leaves the folder and every rank's files: an agent restarted
        # on the same --state-dir (an upgrade) finds the running jobs again, and reports
        # the ranks that died meanwhile (or just before it stopped) as lost, then removes them.

