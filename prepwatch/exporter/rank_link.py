"""Rank side of the node-agent link: a Unix socket that answers with a snapshot.

The agent connects when Prometheus scrapes it; the rank's background thread
renders its registry and closes the connection. Nothing is pushed on a timer, so an
unscraped job pays nothing. A Unix socket in the agent's 0700 state directory is
reachable only by the same user: no TCP listener per rank.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
import weakref
from pathlib import Path
from typing import Any, Callable

from prepwatch.exporter import snapshot
from prepwatch.statedir import check_private_dir, replace_file

# sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_SOCKET_PATH = 107
SEND_BUFFER = 64 << 10
WRITE_TIMEOUT_S = 10.0

# A forked DataLoader worker inherits the listening socket (fork keeps fds whatever their
# CLOEXEC flag): after the rank dies, the worker's copy would accept the agent's connections
# and never answer, hiding the death. Children close it right after fork.
_links: weakref.WeakSet[RankLink] = weakref.WeakSet()


def _close_in_child() -> None:
    for link in list(_links):
        try:
            link._server.socket.close()
        except OSError:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class RankLink:
    def __init__(
        self,
        agent_dir: Path,
        collector: Any,
        identity: dict[str, Any],
        on_error: Callable[[str, BaseException], None],
        write_timeout: float = WRITE_TIMEOUT_S,
    ) -> None:
        """``write_timeout``: how long one write to a reader that stopped reading may block
        before this rank hangs up on it (the agent itself gives up after 2 s)."""
        ranks = Path(agent_dir) / "ranks"
        if not ranks.is_dir():
            raise FileNotFoundError(
                f"prepwatch: agent directory {agent_dir} has no ranks/ folder; is `prepwatch agent` "
                "running with this --state-dir? Unset PREPWATCH_AGENT_DIR to serve metrics "
                "from this process instead."
            )
        # ranks/ must be ours (root may use whoever's it is) and closed to others: in a
        # folder others can write, our socket and identity file could be swapped for theirs.
        check_private_dir(ranks, "PREPWATCH_AGENT_DIR (the agent's --state-dir)",
                          owners=(ranks.stat().st_uid,) if os.geteuid() == 0 else ())
        self.path = ranks / f"{os.getpid()}.sock"
        if len(os.fsencode(str(self.path))) > MAX_SOCKET_PATH:
            raise ValueError(
                f"prepwatch: the agent's state directory {agent_dir} is too long for a Unix "
                f"socket path ({len(os.fsencode(str(self.path)))} > {MAX_SOCKET_PATH} bytes); "
                "start `prepwatch agent --state-dir` with a shorter path (and point "
                "PREPWATCH_AGENT_DIR at it)"
            )
        # Who this socket is, for an agent that never got to scrape it: a rank that dies
        # before its first scrape (OOM in set-up) is still reported as lost by name.
        self.identity_path = self.path.with_suffix(".json")
        replace_file(self.identity_path,
                     json.dumps({"run": identity["run"], "rank": identity["rank"]}).encode())
        collector_, identity_, on_error_, write_timeout_ = collector, identity, on_error, write_timeout

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                # Sent as rendered, 64 KiB at a time: the agent checks what arrived while
                # the rest is rendered. A reader that stops reading is hung up on.
                try:
                    self.request.settimeout(write_timeout_)
                    with self.request.makefile("wb", buffering=SEND_BUFFER) as out:
                        for chunk in snapshot.stream(collector_, identity_):
                            out.write(chunk)
                except (BrokenPipeError, ConnectionResetError, socket.timeout):
                    pass  # the reader gave up, or stopped reading: nothing is wrong here
                except Exception as exc:
                    on_error_("agent_link", exc)

        if self.path.exists():
            self.path.unlink()
        self.path.with_suffix(".bye").unlink(missing_ok=True)  # from an earlier start() of ours
        self._server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        self._server.daemon_threads = True
        _links.add(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="prepwatch-agent-link", daemon=True
        )
        self._thread.start()
        self.url = None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        # A goodbye first: the agent tells this clean exit from a socket deleted under a
        # live process (which it reports as lost) while the process is still exiting.
        try:
            replace_file(self.path.with_suffix(".bye"), b"")
        except OSError:
            pass
        for path in (self.path, self.identity_path):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
