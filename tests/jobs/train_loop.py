"""A real small training job for CLI tests: trains until --seconds pass or SIGTERM.

On SIGTERM it writes a marker next to --marker and exits with code 7, so a test can
tell the signal reached the job and its exit status came back.
"""

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from datasets import TensorPairs  # noqa: E402

import prepwatch  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--seconds", type=float, default=30)
p.add_argument("--marker", default="")
p.add_argument("--workers", type=int, default=1)
p.add_argument("--run", default=None, help="prepwatch.start(run=...); default: from the environment")
args = p.parse_args()


def on_term(signum, frame):
    if args.marker:
        Path(args.marker).write_text(f"{signum} {os.environ.get('PREPWATCH_AGENT_DIR', '')}")
    sys.exit(7)


signal.signal(signal.SIGTERM, on_term)
if args.marker:
    Path(args.marker + ".env").write_text(os.environ.get("PREPWATCH_AGENT_DIR", ""))
torch.set_num_threads(1)
watch = prepwatch.start(run=args.run)
dl = DataLoader(TensorPairs(64, delay=0.001), batch_size=8, num_workers=args.workers,
                persistent_workers=args.workers > 0)
deadline = time.monotonic() + args.seconds
while time.monotonic() < deadline:
    for _batch in watch.loader(dl):
        time.sleep(0.01)
