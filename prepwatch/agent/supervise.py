"""Run a job as a child of the agent: forward signals, return its exit status."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Mapping, Sequence

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def exit_status(returncode: int) -> int:
    """Shell convention: a child killed by signal N exits 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def run_child(cmd: Sequence[str], env: Mapping[str, str]) -> int:
    """Start ``cmd`` in its own process group and forward signals to it.

    Its own group: a terminal's Ctrl-C reaches only us, and we pass it on exactly
    once (otherwise the job would see SIGINT twice). The job decides how to stop.
    """
    try:
        child = subprocess.Popen(list(cmd), env=dict(env), start_new_session=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"command not found: {cmd[0]}") from None
    previous = {}

    def forward(signum: int, _frame: object) -> None:
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        previous[sig] = signal.signal(sig, forward)
    try:
        while True:
            try:
                returncode = child.wait()
                break
            except KeyboardInterrupt:  # pragma: no cover - handler replaced above
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return exit_status(returncode)
