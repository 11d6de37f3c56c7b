"""`prepwatch demo`: the agent plus a small real training job, for a first look."""

from __future__ import annotations

import argparse
import os
import sys

from prepwatch.agent.agent import Agent
from prepwatch.agent.supervise import run_child
from prepwatch.cli.common import add_serve_options, serve_kwargs
from prepwatch.demo import FAULTS
from prepwatch.demo.status import StatusPrinter
from prepwatch.summary.hooks import RunSummary, add_summary_option


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="run a small CPU training job with every signal on",
        description="A synthetic training job (small CNN on generated images) with the agent "
        "attached. Open the printed /metrics URL, or point Prometheus at it. --fault makes one "
        "failure mode happen for real.",
    )
    add_serve_options(p)
    p.add_argument("--seconds", type=float, default=120.0, help="how long to train (0 = until Ctrl-C)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--fault", choices=FAULTS, help="make this failure mode happen")
    p.add_argument("--seed", type=int, default=0)
    add_summary_option(p)
    p.add_argument("--status-every", type=float, default=2.0, help="status line period (s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    if args.seconds < 0:
        raise ValueError(f"--seconds must be >= 0, got {args.seconds}")
    agent = Agent(run="demo", **serve_kwargs(args))
    fault = f" with fault {args.fault!r}" if args.fault else ""
    print(
        f"prepwatch demo{fault}: metrics at {agent.url}\n"
        f"  try: curl -s {agent.url} | grep -E 'data_wait|step_duration|sample_fetch'",
        flush=True,
    )
    cmd = [
        sys.executable, "-m", "prepwatch.demo.job", "--seconds", str(args.seconds),
        "--workers", str(args.workers), "--seed", str(args.seed),
    ]
    if args.fault:
        cmd += ["--fault", args.fault]
    env = dict(os.environ)
    env.update(agent.env())
    status = StatusPrinter(agent.collector, sys.stdout, every=args.status_every)
    status.start()
    summary = RunSummary(agent, "demo", args.summary)
    try:
        return run_child(cmd, env)
    finally:
        status.stop()
        summary.finish()
        agent.close()
