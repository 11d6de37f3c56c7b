"""`prepwatch agent`: a node daemon for jobs started separately."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from prepwatch.agent.agent import ENV_AGENT_DIR, Agent, default_state_dir
from prepwatch.cli.common import add_serve_options, serve_kwargs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "agent", help="serve every prepwatch job on this node on one endpoint",
        description="Node agent. Jobs report to it when started with "
        f"{ENV_AGENT_DIR}=<state dir> in their environment.",
    )
    add_serve_options(p)
    p.add_argument(
        "--state-dir", type=Path, default=None,
        help=f"folder jobs find through ${ENV_AGENT_DIR} (default {default_state_dir()})",
    )
    p.add_argument(
        "--no-process-tree", dest="watch_processes", action="store_false",
        help="do not sample the ranks' processes (CPU, RSS, IO): for an agent in another PID "
        "namespace than the jobs (a Kubernetes DaemonSet), where their pids name other processes",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or default_state_dir()
    agent = Agent(state_dir, owns_state_dir=False, watch_processes=args.watch_processes,
                  **serve_kwargs(args))
    print(
        f"prepwatch agent: serving {agent.url}\n"
        f"  start jobs with: export {ENV_AGENT_DIR}={agent.state_dir}",
        file=sys.stderr, flush=True,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        agent.close()
    return 0
