"""``prepwatch.start()``: set up this process' metrics and where they are served.

Two ways to be served, chosen by the environment:

* ``$PREPWATCH_AGENT_DIR`` set (``prepwatch run``, or a node ``prepwatch agent``):
  the process registers a Unix socket with the agent, which serves every rank of
  the node on one port. No port is opened here.
* otherwise the process serves its own endpoint on 127.0.0.1:9400 (+ LOCAL_RANK, so
  ranks of one node do not collide).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional, Union

from prepwatch._version import __version__
from prepwatch.context import Context
from prepwatch.exporter.http import MetricsServer, validate_bind
from prepwatch.exporter.rank_link import RankLink
from prepwatch.identity import Identity
from prepwatch.sources import start_sources
from prepwatch.statedir import create_new
from prepwatch.watch import Watch

log = logging.getLogger("prepwatch")
DEFAULT_PORT = 9400

_lock = threading.Lock()
_watch: Optional[Watch] = None


def _port_from_env(local_rank: int) -> int:
    """$PREPWATCH_PORT (default 9400) is the node's base port: each local rank adds its
    LOCAL_RANK, so one variable set for a whole torchrun job gives every rank its own."""
    raw = os.environ.get("PREPWATCH_PORT")
    base = DEFAULT_PORT
    if raw:
        try:
            base = int(raw)
        except ValueError:
            raise ValueError(f"PREPWATCH_PORT={raw!r} is not an integer port") from None
        if base == 0:
            return 0  # any free port
    return base + local_rank


def _writable_dir(path: Path, option: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".prepwatch-write-test-{os.getpid()}"
        probe.unlink(missing_ok=True)
        create_new(probe, b"ok")  # never through a planted symlink
        probe.unlink()
    except OSError as exc:
        raise PermissionError(
            f"prepwatch: directory {path} is not writable ({exc.strerror}); pass another with "
            f"{option}"
        ) from None
    return path


def start(
    run: Optional[str] = None,
    *,
    host: Optional[str] = None,
    port: Optional[int] = None,
    agent_dir: Union[str, Path, None] = None,
    state_dir: Union[str, Path, None] = None,
    sources: bool = True,
    sample_interval: float = 1.0,
    basic_auth: Optional[tuple[str, str]] = None,
    tls: Optional[tuple[str, str]] = None,
    instrument_open: bool = False,
    identity: Optional[Identity] = None,
) -> Watch:
    """Start prepwatch in this process and return its :class:`Watch`.

    Calling it again returns the running Watch when it asks for nothing else (no
    arguments, or the same ones); a second call whose arguments differ from the running
    Watch's raises ``ValueError`` naming both, since its settings (another port, another
    run) would silently not apply: call :func:`stop` first to restart with them. Arguments
    are checked here, at set-up: a taken port or an unwritable directory raises at once
    with the fix.

    Args:
        run: job name, the ``run`` label (default: ``$PREPWATCH_RUN``,
            ``$TORCHELASTIC_RUN_ID`` or the script name).
        host, port: where to serve /metrics when no agent is present
            (default 127.0.0.1 and 9400 + LOCAL_RANK; ``$PREPWATCH_HOST``/``$PREPWATCH_PORT``).
            Binding anything but loopback exposes the endpoint: an explicit choice.
        agent_dir: report to the agent with this state directory instead of serving
            (default ``$PREPWATCH_AGENT_DIR``).
        state_dir: where this process writes artifacts (overlays) when serving itself;
            default a temporary directory removed at exit.
        sources: sample GPU and host in a background thread (standalone mode only;
            with an agent, the agent samples them).
        instrument_open: time every read-only file open of dataset code, here and in
            DataLoader workers (``prepwatch_file_open_seconds``; ~2 us per open).
        identity: run/rank as a training framework knows them (``prepwatch.integrations``
            pass the Trainer's distributed state); default read from the environment.
    """
    global _watch, _settings
    given = {name: str(value) if isinstance(value, Path) else value
             for name, value in locals().items() if name in _DEFAULTS and value != _DEFAULTS[name]}
    with _lock:
        if _watch is not None:
            _refuse_other_settings(given, _settings)
            return _watch
        identity = identity if identity is not None else Identity.from_env(run)
        ctx = Context.create(identity)
        reg = ctx.registry
        reg.gauge("prepwatch_build_info", "prepwatch version.", ["version"]).labels(__version__).set(1)
        reg.gauge(
            "prepwatch_start_timestamp_seconds", "Unix time prepwatch.start() ran in this process."
        ).labels().set(time.time())
        ctx.errors.precreate("loader", "worker_hook", "worker")

        agent = agent_dir if agent_dir is not None else os.environ.get("PREPWATCH_AGENT_DIR")
        exporter: Any
        extra: list[Any] = []
        if agent:
            agent_path = Path(agent)
            artifacts = agent_path / "artifacts" / identity.run / f"rank{identity.rank}"
            _writable_dir(artifacts, "PREPWATCH_AGENT_DIR (the agent's --state-dir)")
            exporter = RankLink(
                agent_path, reg, {
                    "run": identity.run, "rank": identity.rank, "local_rank": identity.local_rank,
                    "world_size": identity.world_size, "pid": identity.pid, "host": identity.host,
                },
                ctx.errors.report,
            )
        else:
            host = host if host is not None else os.environ.get("PREPWATCH_HOST", "127.0.0.1")
            port = port if port is not None else _port_from_env(identity.local_rank)
            validate_bind(host, port)
            if state_dir is None:
                root = Path(tempfile.mkdtemp(prefix="prepwatch-"))
                atexit.register(shutil.rmtree, root, True)
            else:
                root = _writable_dir(Path(state_dir), "state_dir=...")
            artifacts = _writable_dir(root / identity.run / f"rank{identity.rank}", "state_dir=...")
            exporter = MetricsServer(
                reg, const_labels=identity.labels(), host=host, port=port,
                artifacts_root=root, basic_auth=basic_auth, tls=tls,
                port_option=(
                    "prepwatch.start(port=...) or $PREPWATCH_PORT (a base: LOCAL_RANK is added"
                    + (f"; this is local rank {identity.local_rank}, so every rank needs its own "
                       "port, and an explicit port= is taken as given)"
                       if identity.local_rank else ")")
                ),
                on_error=ctx.errors.report,
            )
            if sources:
                extra = start_sources(ctx, pids=lambda: [os.getpid()], interval=sample_interval)
        watch = Watch(ctx, _Exporter(exporter, extra), artifacts)
        watch.start_recording(instrument_open=instrument_open)
        _settings = _first_settings(given, identity.run, host, port, agent)
        _watch = watch
        atexit.register(stop)
        return watch


_DEFAULTS: dict[str, Any] = {
    "run": None, "host": None, "port": None, "agent_dir": None, "state_dir": None,
    "sources": True, "sample_interval": 1.0, "basic_auth": None, "tls": None,
    "instrument_open": False,
}
_settings: dict[str, Any] = {}


def _first_settings(
    given: dict[str, Any], run: str, host: Optional[str], port: Optional[int], agent: Any,
) -> dict[str, Any]:
    """What the running Watch was started with: the given arguments, plus where it went."""
    settings = dict(given)
    caller = sys._getframe(2)
    settings["_where"] = f"{caller.f_code.co_filename}:{caller.f_lineno}"
    settings["run"] = run
    settings["agent_dir" if agent else "port"] = str(agent) if agent else port
    if not agent:
        settings["host"] = host
    return settings


def _refuse_other_settings(given: dict[str, Any], first: dict[str, Any]) -> None:
    """A second start() that asks for something else would be silently ignored: say so."""
    differ = {k: v for k, v in given.items() if v != first.get(k)}
    if not differ:
        return
    running = {k: v for k, v in first.items() if not k.startswith("_")}
    raise ValueError(
        f"prepwatch.start() is already running in this process ({_show(running)}; started at "
        f"{first.get('_where', '?')}); this call asks for {_show(differ)}, which would not take "
        "effect. Call prepwatch.stop() first to restart with these settings, or "
        "prepwatch.start() without arguments (or prepwatch.current()) for the running Watch"
    )


def _show(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={'***' if k == 'basic_auth' else repr(v)}" for k, v in settings.items())


def current() -> Optional[Watch]:
    """The running Watch of this process, if :func:`start` was called."""
    return _watch


def stop() -> None:
    """Stop serving, stop samplers, release the port. Safe to call more than once."""
    global _watch
    with _lock:
        watch, _watch = _watch, None
    if watch is not None:
        watch.stop()


class _Exporter:
    def __init__(self, server: Any, extras: list[Any]) -> None:
        self._server = server
        self._extras = extras

    @property
    def url(self) -> Optional[str]:
        return getattr(self._server, "url", None)

    def close(self) -> None:
        for extra in self._extras:
            extra.close()
        self._server.close()
