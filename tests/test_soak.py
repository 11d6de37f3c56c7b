"""Soak: the demo with workers and every check on, scraped every second.

Bound (stated): after a warm-up (25 s and 40 training steps, so a busy machine that runs
the demo slowly is not still loading it), neither the agent nor the job grows by more than
40 MiB RSS or 8 open file descriptors over the rest of the run. Leaks that matter
(a series, a file or a socket per step, per scrape or per worker restart) exceed it
within a minute at this rate.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

SOAK_SECONDS = 100
WARMUP = 25
WARMUP_STEPS = 40
RSS_BOUND = 40 * 2**20
FD_BOUND = 8


def _footprint(proc: psutil.Process) -> tuple[int, int]:
    return proc.memory_info().rss, proc.num_fds()


@pytest.mark.slow
def test_soak_demo_with_every_check_scraped_every_second():
    demo = subprocess.Popen(
        [sys.executable, "-m", "prepwatch.cli.main", "demo", "--seconds", str(SOAK_SECONDS), "--port", "0",
         "--workers", "2", "--status-every", "30"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        url = re.search(r"(http://\S+/metrics)", demo.stdout.readline()).group(1)
        agent = psutil.Process(demo.pid)
        t0 = time.monotonic()
        first = None
        samples = []
        steps = 0.0
        while demo.poll() is None and time.monotonic() - t0 < SOAK_SECONDS - 5:
            try:
                body = urllib.request.urlopen(url, timeout=5).read().decode()
                found = re.search(r"^prepwatch_steps_total\{[^}]*\} (\S+)$", body, re.M)
                steps = float(found.group(1)) if found else steps
            except OSError:
                pass
            jobs = agent.children()
            if jobs and time.monotonic() - t0 > WARMUP and steps >= WARMUP_STEPS:
                now = (_footprint(agent), _footprint(jobs[0]))
                first = first or now
                samples.append(now)
            time.sleep(1.0)
        assert first is not None and len(samples) > 20, (steps, len(samples))
        last = samples[-1]
        for who, (rss0, fds0), (rss1, fds1) in (("agent", first[0], last[0]), ("job", first[1], last[1])):
            assert rss1 - rss0 < RSS_BOUND, f"{who} RSS grew {(rss1 - rss0) / 2**20:.1f} MiB"
            assert fds1 - fds0 <= FD_BOUND, f"{who} fds grew {fds0} -> {fds1}"
        assert demo.wait(timeout=60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        demo.stdout.close()
