"""Launch two ranks of train_loop.py like torchrun would (RANK, LOCAL_RANK, WORLD_SIZE)."""

import os
import subprocess
import sys
from pathlib import Path

job = Path(__file__).with_name("train_loop.py")
procs = []
for rank in range(2):
    env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    procs.append(subprocess.Popen([sys.executable, str(job), *sys.argv[1:]], env=env))
sys.exit(max(p.wait() for p in procs))
