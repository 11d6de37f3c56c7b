"""A rank of a job as prepwatch sees it, without torch: identity and agent from the
environment (PREPWATCH_AGENT_DIR, SLURM_* or RANK), a loop of short steps through
watch.loader. Runs until terminated, or for argv[1] seconds."""

import signal
import sys
import time

import prepwatch

stop_at = time.monotonic() + float(sys.argv[1]) if len(sys.argv) > 1 else float("inf")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def batches():
    while time.monotonic() < stop_at:
        yield [0.0] * 8


watch = prepwatch.start()
print("registered", flush=True)
for _ in watch.loader(batches(), batch_size=8):
    time.sleep(0.02)
