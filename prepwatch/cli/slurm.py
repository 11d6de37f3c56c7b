"""`prepwatch slurm`: one agent per node of a Slurm job, discovered through file_sd.

Two roles, both driven by Slurm's environment:

* ``prepwatch slurm run [options] -- CMD`` goes in the batch script (or an salloc shell).
  It starts ``prepwatch slurm node`` once per node of the allocation with
  ``srun --overlap --ntasks-per-node=1``, waits until every node's agent has written its
  target file, runs CMD (usually ``srun python train.py``) with ``PREPWATCH_AGENT_DIR`` and
  ``PREPWATCH_RUN`` set, and at the end stops the agents, removes any target file left
  behind and exits with CMD's status.
* ``prepwatch slurm node [options]`` is the per-node part: the agent of this node for this
  job, plus ``<sd-dir>/prepwatch-<job id>-<node>.json`` naming its address with the labels
  ``slurm_job_id`` and ``node``; the file goes when the agent stops (SIGTERM from srun).

Ranks take ``rank`` from ``SLURM_PROCID`` (or torchrun's/MPI's variables) as always. The
``run`` label is not put in the target file: a target label that a series also carries
would rename the series' own label to ``exported_run``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Mapping, Optional

from prepwatch.agent.agent import ENV_AGENT_DIR, Agent
from prepwatch.agent.file_sd import remove_target, write_target
from prepwatch.agent.supervise import run_child
from prepwatch.cli.common import add_serve_options, serve_kwargs
from prepwatch.cli.run import default_run_name
from prepwatch.exporter.http import PortInUseError
from prepwatch.metrics import sanitize_label_value

ENV_SD_DIR = "PREPWATCH_SLURM_SD_DIR"
STOP_GRACE_S = 15.0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "slurm", help="one agent per node of a Slurm job, with Prometheus file_sd targets",
        description=__doc__.split("\n\n")[0],
    )
    roles = p.add_subparsers(dest="role", metavar="ROLE", required=True)
    run_p = roles.add_parser(
        "run", help="in the batch script: agents on every node, then CMD",
        description="Start one agent per node (srun --overlap --ntasks-per-node=1), wait for "
        "their target files, run CMD with PREPWATCH_AGENT_DIR set, stop the agents. Example, in "
        "an sbatch script: prepwatch slurm run --host 0.0.0.0 --sd-dir /shared/prom/sd -- "
        "srun python train.py",
    )
    node_p = roles.add_parser(
        "node", help="the agent of this node for this job (what `slurm run` starts per node)",
    )
    for q in (run_p, node_p):
        add_serve_options(q)
        q.add_argument(
            "--sd-dir", type=Path, default=os.environ.get(ENV_SD_DIR),
            help=f"folder Prometheus reads target files from (default ${ENV_SD_DIR})",
        )
        q.add_argument(
            "--state-dir", type=Path, default=None,
            help="node-local folder for the ranks' sockets (default /tmp/prepwatch-slurm-<job id>)",
        )
        q.add_argument("--run", dest="run_name", help="the `run` label (default $PREPWATCH_RUN, "
                       "else CMD's script name plus -<job id>, as ranks name themselves)")
        q.add_argument(
            "--advertise", metavar="HOST",
            help="host name Prometheus reaches this node by (default: --host, or the Slurm "
            "node name when --host is a wildcard address)",
        )
        q.add_argument("--port-tries", type=int, default=20,
                       help="ports to try upwards from --port when it is taken (default 20)")
    run_p.add_argument("--srun-args", default="",
                       help="extra srun options for the agent step, e.g. '--gres=gpu:8' where "
                       "cgroups hide GPUs from steps that did not ask for them")
    run_p.add_argument("--wait", type=float, default=60.0,
                       help="seconds to wait for every node's agent (default 60)")
    run_p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    p.set_defaults(func=run)


def job_id(env: Mapping[str, str]) -> str:
    jid = env.get("SLURM_JOB_ID", "")
    if not jid:
        raise ValueError("prepwatch slurm: SLURM_JOB_ID is not set; run inside an sbatch/salloc job")
    return jid


def node_name(env: Mapping[str, str]) -> str:
    """Slurm's name for this node (set for every task), else the host name."""
    return env.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]


def default_state_dir(jid: str) -> Path:
    return Path("/tmp") / f"prepwatch-slurm-{jid}"


def target_path(sd_dir: Path, jid: str, node: str) -> Path:
    return Path(sd_dir) / f"prepwatch-{sanitize_label_value(jid)}-{sanitize_label_value(node)}.json"


def _sd_dir(args: argparse.Namespace) -> Path:
    if args.sd_dir is None:
        raise ValueError(f"prepwatch slurm: give --sd-dir (or ${ENV_SD_DIR}), the folder Prometheus' "
                         "file_sd_configs read")
    return Path(args.sd_dir)


def _advertise(args: argparse.Namespace, node: str) -> str:
    if args.advertise:
        return args.advertise
    if args.host in ("0.0.0.0", "::", ""):
        return node
    return f"[{args.host}]" if ":" in args.host else args.host


def start_agent(args: argparse.Namespace, state_dir: Path, run_name: Optional[str]) -> Agent:
    """The node's agent on --port, or the next free port: two jobs may share a node."""
    kwargs = serve_kwargs(args)
    base = kwargs.pop("port")
    tries = max(1, args.port_tries)
    for port in range(base, base + tries):
        try:
            return Agent(state_dir, owns_state_dir=True, run=run_name, port=port, **kwargs)
        except PortInUseError:
            if port == base + tries - 1:
                raise
    raise AssertionError("unreachable")


def run_node(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    jid = job_id(env)
    node = node_name(env)
    sd_dir = _sd_dir(args)
    run_name = args.run_name or env.get("PREPWATCH_RUN") or None
    stop = threading.Event()  # before the agent exists: srun's SIGTERM must reach the cleanup
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    agent = start_agent(args, args.state_dir or default_state_dir(jid),
                        sanitize_label_value(run_name) if run_name else None)
    path = target_path(sd_dir, jid, node)
    try:
        address = _advertise(args, node)
        if address.startswith("127.") or address in ("localhost", "[::1]"):
            print(f"prepwatch slurm: node {node} advertises {address}, reachable only from this "
                  "node; for a Prometheus elsewhere pass --host 0.0.0.0 (or the node's address)",
                  file=sys.stderr, flush=True)
        write_target(path, f"{address}:{agent.server.port}", {"slurm_job_id": jid, "node": node})
        print(f"prepwatch slurm: node {node} serving {agent.url}, target file {path}",
              file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        remove_target(path)
        agent.close()
    return 0


def _forwarded_options(args: argparse.Namespace, state_dir: Path, sd_dir: Path, run_name: str) -> list[str]:
    opts = ["--host", args.host, "--port", str(args.port), "--interval", str(args.interval),
            "--sd-dir", str(sd_dir), "--state-dir", str(state_dir), "--run", run_name,
            "--port-tries", str(args.port_tries)]
    if args.advertise:
        opts += ["--advertise", args.advertise]
    if args.basic_auth:
        opts += ["--basic-auth", args.basic_auth]
    if args.tls_cert:
        opts += ["--tls-cert", args.tls_cert, "--tls-key", args.tls_key]
    return opts


def _stop(proc: subprocess.Popen) -> None:
    """srun passes SIGTERM to its tasks: each agent removes its file and exits."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run_job(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ValueError("nothing to run: use `prepwatch slurm run [options] -- CMD ARGS...`")
    jid = job_id(env)
    sd_dir = _sd_dir(args)
    if not sd_dir.is_dir():
        raise FileNotFoundError(f"prepwatch slurm: --sd-dir {sd_dir} does not exist")
    nodes = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or "1")
    named = args.run_name or env.get("PREPWATCH_RUN")
    run_name = sanitize_label_value(named) if named else f"{default_run_name(cmd)}-{jid}"
    state_dir = args.state_dir or default_state_dir(jid)
    agent_env = dict(env, PREPWATCH_RUN=run_name)
    srun = [
        "srun", "--overlap", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1",
        "--kill-on-bad-exit=0", *shlex.split(args.srun_args),
        sys.executable, "-m", "prepwatch.cli.main", "slurm", "node",
        *_forwarded_options(args, state_dir, sd_dir, run_name),
    ]
    try:
        agents = subprocess.Popen(srun, env=agent_env, start_new_session=True)
    except FileNotFoundError:
        raise FileNotFoundError("prepwatch slurm: srun not found; run inside a Slurm job") from None
    job_env = dict(agent_env)
    try:
        pattern = f"prepwatch-{sanitize_label_value(jid)}-*.json"
        deadline = time.monotonic() + args.wait
        while len(list(sd_dir.glob(pattern))) < nodes:
            if agents.poll() is not None or time.monotonic() > deadline:
                # The job comes first: without every agent, ranks serve their own loopback
                # endpoints instead of failing to register with an agent that is not there.
                print(f"prepwatch slurm: {len(list(sd_dir.glob(pattern)))} of {nodes} node agents "
                      "came up; running the job without them (see the agents' output above)",
                      file=sys.stderr, flush=True)
                break
            time.sleep(0.2)
        else:
            job_env[ENV_AGENT_DIR] = str(state_dir)
            print(f"prepwatch slurm: {nodes} node agent(s) up for run {run_name!r}; targets in "
                  f"{sd_dir}", file=sys.stderr, flush=True)
        return run_child(cmd, job_env)
    finally:
        _stop(agents)
        for left in sd_dir.glob(f"prepwatch-{sanitize_label_value(jid)}-*.json"):
            remove_target(left)


def run(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    return run_node(args, env) if args.role == "node" else run_job(args, env)
