"""`prepwatch run -- CMD ...`: the agent with one job as its child."""

from __future__ import annotations

import argparse
import os
import sys

from prepwatch.agent.agent import Agent
from prepwatch.agent.supervise import run_child
from prepwatch.cli.common import add_serve_options, serve_kwargs
from prepwatch.metrics import sanitize_label_value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="run a training command with the agent attached",
        description="Start CMD so that its prepwatch hooks (every rank and DataLoader worker) "
        "report to this agent, serve them on one /metrics endpoint, forward signals, and exit "
        "with CMD's exit status. Example: prepwatch run -- torchrun --nproc-per-node 2 train.py",
    )
    add_serve_options(p)
    p.add_argument(
        "--run", dest="run_name", help="run name, the `run` label (default: $PREPWATCH_RUN, else from CMD)"
    )
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    p.set_defaults(func=run)


def default_run_name(cmd: list[str]) -> str:
    """`python train.py` -> train; `torchrun ... train.py` -> train; `./job` -> job."""
    for part in cmd:
        if part.endswith(".py"):
            return sanitize_label_value(os.path.basename(part)[:-3])
    return sanitize_label_value(os.path.basename(cmd[0]))


def run(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ValueError("nothing to run: use `prepwatch run [options] -- CMD ARGS...`")
    # --run, else $PREPWATCH_RUN (Kubernetes/Slurm set it from the job), else from CMD.
    named = args.run_name or os.environ.get("PREPWATCH_RUN")
    name = sanitize_label_value(named) if named else default_run_name(cmd)
    agent = Agent(run=name, **serve_kwargs(args))
    print(f"prepwatch: serving run {name!r} at {agent.url}", file=sys.stderr, flush=True)
    env = dict(os.environ)
    env.update(agent.env())
    try:
        return run_child(cmd, env)
    finally:
        agent.close()
