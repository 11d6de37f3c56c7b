"""Kill one DataLoader worker mid-epoch; print what the loop saw, as the job would."""

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from datasets import TensorPairs  # noqa: E402

import prepwatch  # noqa: E402

wrap = sys.argv[1] == "wrapped"
torch.set_num_threads(1)
dl = DataLoader(TensorPairs(400, delay=0.01), batch_size=4, num_workers=2)
loader = prepwatch.start(port=0, sources=False).loader(dl) if wrap else dl
try:
    for i, _ in enumerate(loader):
        if i == 3:
            # a worker, not whatever else the process forked (pin-memory and resource
            # sharing helpers are threads); on a busy machine wait for it to be listed
            deadline = time.monotonic() + 30
            while not psutil.Process().children() and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(psutil.Process().children()[0].pid, signal.SIGKILL)
        time.sleep(0.01)
    print("finished")
except RuntimeError as exc:
    print("RuntimeError:", "killed by signal" in str(exc) or "exited unexpectedly" in str(exc))
