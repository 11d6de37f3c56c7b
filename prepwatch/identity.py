"""Who this process is: run name and rank, from torch.distributed's environment."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field

from prepwatch.metrics.labels import sanitize_label_value


def _int_env(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


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
        """torchrun/torchelastic set RANK, LOCAL_RANK, WORLD_SIZE and TORCHELASTIC_RUN_ID."""
        env = dict(os.environ) if env is None else env
        if run is None:
            run = env.get("PREPWATCH_RUN")
        if not run:
            elastic = env.get("TORCHELASTIC_RUN_ID", "")
            run = elastic if elastic and elastic != "none" else None
        if not run:
            script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
            run = script[:-3] if script.endswith(".py") else script
        return cls(
            run=sanitize_label_value(run),
            rank=_int_env(env, "RANK", 0),
            local_rank=_int_env(env, "LOCAL_RANK", 0),
            world_size=_int_env(env, "WORLD_SIZE", 1),
        )
