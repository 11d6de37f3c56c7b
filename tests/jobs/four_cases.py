"""Start the four cases of ddp_straggler.py side by side, each a torchrun of 3 gloo ranks.

Run under one `prepwatch run` (one node agent, as on a real node): each torchrun gets its
own run name. SIGTERM is forwarded to every torchrun; the exit status is the worst one.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

JOB = Path(__file__).with_name("ddp_straggler.py")
CASES = sys.argv[1:] or ["healthy", "allslow", "slowcollate", "slowcompute"]
procs = [
    subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3",
         str(JOB), "--case", case],
        env=dict(os.environ, PREPWATCH_RUN=case),
    )
    for case in CASES
]


def forward(signum, frame):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)


signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGINT, forward)
sys.exit(max(p.wait() for p in procs))
