"""Who this process is: run name and rank, from torch.distributed's environment."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field

from prepwatch.metrics.labels import sanitize_label_value

# (rank, local rank, world size) per launcher, in order: torchrun; then launchers that
# start one process per rank without it, so that ranks of such jobs do not all claim
# rank 0. MPI before Slurm: mpirun inside an sbatch allocation sets its own variables for
# its ranks, while Slurm's leak into them from the batch step. All three values come from
# the first launcher that set any of its variables.
LAUNCHERS = (
    ("RANK", "LOCAL_RANK", "WORLD_SIZE"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE"),
    ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"),
)


def _int_env(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def _launcher_ranks(env: dict[str, str]) -> tuple[int, int, int]:
    for rank, local, world in LAUNCHERS:
        if any(env.get(v) for v in (rank, local, world)):
            return _int_env(env, rank, 0), _int_env(env, local, 0), _int_env(env, world, 1)
    return 0, 0, 1


@dataclass(frozen=True)
class Identity:
    run: str
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)

    def labels(self) -> dict[str, str]:
        """Labels every series of this process carries (bounded: one value each)."""
        return {"run": self.run, "rank": str(self.rank)}

    @classmethod
    def from_env(cls, run: str | None = None, env: dict[str, str] | None = None) -> Identity:
        """torchrun/torchelastic set RANK, LOCAL_RANK, WORLD_SIZE and TORCHELASTIC_RUN_ID;
        Slurm and Open MPI set their own. Without a name, the script's (plus the Slurm job id,
        so that two jobs of one script on a node stay apart)."""
        env = dict(os.environ) if env is None else env
        if run is None:
            run = env.get("PREPWATCH_RUN")
        if not run:
            elastic = env.get("TORCHELASTIC_RUN_ID", "")
            run = elastic if elastic and elastic != "none" else None
        if not run:
            script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
            run = script[:-3] if script.endswith(".py") else script
            if env.get("SLURM_JOB_ID"):
                run = f"{run}-{env['SLURM_JOB_ID']}"
        rank, local_rank, world_size = _launcher_ranks(env)
        return cls(
            run=sanitize_label_value(run), rank=rank, local_rank=local_rank, world_size=world_size,
        )
