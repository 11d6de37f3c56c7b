"""Who this process is: run name and rank, from torch.distributed's environment."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field

from prepwatch.metrics.labels import sanitize_label_value

# torchrun's variables first; then the launchers that start one process per rank without
# it (srun, mpirun), so that ranks of such jobs do not all claim rank 0.
RANK_VARS = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
LOCAL_RANK_VARS = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID")
WORLD_SIZE_VARS = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def _int_env(env: dict[str, str], names: tuple[str, ...], default: int) -> int:
    for name in names:
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None
    return default


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
        return cls(
            run=sanitize_label_value(run),
            rank=_int_env(env, RANK_VARS, 0),
            local_rank=_int_env(env, LOCAL_RANK_VARS, 0),
            world_size=_int_env(env, WORLD_SIZE_VARS, 1),
        )
