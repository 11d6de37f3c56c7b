"""`prepwatch run` and `prepwatch agent` with real child jobs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from helpers import read_url, scrape, value, wait_for

JOBS = Path(__file__).parent / "jobs"
PREPWATCH = [sys.executable, "-m", "prepwatch.cli.main"]


class _start:
    """Popen with pipes, killed and reaped (pipes closed) on exit of the with-block."""

    def __init__(self, args, **kw):
        self.proc = subprocess.Popen(
            PREPWATCH + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw
        )

    def __enter__(self):
        return self.proc

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stderr.close()


def _url(proc) -> str:
    return read_url(proc.stderr)


def test_exit_code_of_the_job_comes_back():
    ok = subprocess.run(PREPWATCH + ["run", "--port", "0", "--", sys.executable, "-c", "raise SystemExit(3)"])
    assert ok.returncode == 3
    killed = subprocess.run(
        PREPWATCH + ["run", "--port", "0", "--", sys.executable, "-c",
                     "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    )
    assert killed.returncode == 128 + signal.SIGKILL


def test_missing_command_and_taken_port_are_clear_errors():
    out = subprocess.run(PREPWATCH + ["run", "--port", "0"], capture_output=True, text=True)
    assert out.returncode == 2 and "nothing to run" in out.stderr
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(PREPWATCH + ["run", "--port", str(port), "--", "true"],
                             capture_output=True, text=True)
    assert out.returncode == 2
    assert f"port {port}" in out.stderr and "--port" in out.stderr


def test_two_ranks_with_workers_served_under_one_endpoint_and_sigterm_forwarded(tmp_path):
    marker = tmp_path / "term"
    with _start(["run", "--port", "0", "--run", "twojob", "--", sys.executable,
                 str(JOBS / "train_loop.py"), "--marker", str(marker), "--workers", "1"]) as proc:
        url = _url(proc)

        def worker_timings_and_steps_arrived():
            # a worker records its fetch before the loop receives that batch: wait for both
            s = scrape(url)
            fetched = value(s, "prepwatch_sample_fetch_seconds_count", run="twojob", stage="total")
            steps = value(s, "prepwatch_steps_total", run="twojob", rank="0")
            return (fetched or 0) > 0 and (steps or 0) > 0 and s

        s = wait_for(worker_timings_and_steps_arrived, timeout=60)
        assert value(s, "prepwatch_rank_up", run="twojob", rank="0") == 1
        state_dir = Path((tmp_path / "term.env").read_text())
        assert state_dir.is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 7  # the job's own exit status
    assert marker.read_text().startswith(str(int(signal.SIGTERM)))
    assert not state_dir.exists()  # no temporary state left behind


def test_ranks_of_one_node_each_carry_their_rank(tmp_path):
    with _start(["run", "--port", "0", "--run", "ddp", "--",
                 sys.executable, str(JOBS / "two_ranks.py"), "--seconds", "60", "--workers", "1"]) as proc:
        url = _url(proc)

        def ranks():
            s = scrape(url)
            got = {r for r in ("0", "1") if (value(s, "prepwatch_steps_total", run="ddp", rank=r) or 0) > 0}
            return got == {"0", "1"} and s

        s = wait_for(ranks, timeout=90)
        assert value(s, "prepwatch_agent_ranks") == 2
        body = urllib.request.urlopen(url).read().decode()
        types = [line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")]
        assert len(types) == len(set(types))  # one family per name across agent and ranks
        assert value(s, "prepwatch_build_info", run="ddp") == 3  # the agent's and two ranks\'
        # the agent's process-tree sampler finds the ranks' DataLoader workers (rescans every 10 s)
        wait_for(lambda: (value(scrape(url), "prepwatch_process_cpu_seconds_total", run="ddp",
                                role="workers") or 0) > 0, timeout=30)
        assert value(s, "prepwatch_sample_fetch_seconds_count", run="ddp", rank="1", stage="total") > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM  # the launcher itself died of it


def test_node_agent_serves_separately_started_jobs_and_notices_a_killed_one(tmp_path):
    state = tmp_path / "agent"
    job = None
    with _start(["agent", "--port", "0", "--state-dir", str(state)]) as agent:
        url = _url(agent)
        assert any(f"PREPWATCH_AGENT_DIR={state}" in agent.stderr.readline() for _ in range(3))
        env = dict(os.environ, PREPWATCH_AGENT_DIR=str(state), PREPWATCH_RUN="sep")
        job = subprocess.Popen([sys.executable, str(JOBS / "train_loop.py"), "--workers", "0"], env=env)
        wait_for(lambda: (value(scrape(url), "prepwatch_steps_total", run="sep") or 0) > 0, timeout=60)
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=10)
        s = wait_for(lambda: (s := scrape(url)) and value(s, "prepwatch_rank_up", run="sep") == 0 and s,
                     timeout=20)
        assert value(s, "prepwatch_steps_total", run="sep") is None  # its series are gone
        assert not list((state / "ranks").glob("*.sock"))  # stale socket cleaned up
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=20) == 0


def test_demo_runs_and_prints_a_status_line():
    t0 = time.monotonic()
    out = subprocess.run(
        PREPWATCH + ["demo", "--seconds", "8", "--port", "0", "--workers", "1", "--status-every", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "metrics at http://127.0.0.1:" in out.stdout
    assert re.search(r"steps/s .* data-wait .* step p50 .* p99", out.stdout), out.stdout
    assert time.monotonic() - t0 < 100  # an 8 s demo that stops (startup is slow on a busy machine)


IDLE_RANK = """
import sys, time, prepwatch
prepwatch.start()
open(sys.argv[1], "w").write("registered")
time.sleep(600)
"""


def test_agent_restart_keeps_live_ranks_and_names_one_that_died_unscraped(tmp_path):
    """A node agent restarted on its --state-dir (an upgrade) finds the running jobs again,
    and a rank that died before any scrape (OOM during set-up) is still reported lost."""
    state = tmp_path / "agent"
    jobs: list[subprocess.Popen] = []
    try:
        with _start(["agent", "--port", "0", "--state-dir", str(state)]) as first:
            _url(first)
            for run in ("alive", "oom"):
                env = dict(os.environ, PREPWATCH_AGENT_DIR=str(state), PREPWATCH_RUN=run)
                jobs.append(subprocess.Popen(
                    [sys.executable, "-c", IDLE_RANK, str(tmp_path / run)], env=env))
            wait_for(lambda: all((tmp_path / run).exists() for run in ("alive", "oom")), timeout=60)
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=20) == 0
        alive, oom = jobs
        assert (state / "ranks" / f"{alive.pid}.sock").exists()  # left for the next agent
        oom.send_signal(signal.SIGKILL)
        oom.wait(timeout=10)

        with _start(["agent", "--port", "0", "--state-dir", str(state)]) as second:
            s = scrape(_url(second))
            assert value(s, "prepwatch_rank_up", run="alive", rank="0") == 1
            assert value(s, "prepwatch_rank_up", run="oom", rank="0") == 0  # named, never scraped
            assert value(s, "prepwatch_agent_ranks") == 1
            assert not list((state / "ranks").glob(f"{oom.pid}.*"))  # its socket and identity
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
            job.wait()


def test_a_state_dir_too_long_for_a_unix_socket_is_a_clear_error(tmp_path):
    from prepwatch.agent.agent import prepare_state_dir

    deep = prepare_state_dir(tmp_path / ("d" * 100))
    out = subprocess.run(
        [sys.executable, "-c", "import prepwatch; prepwatch.start()"], capture_output=True,
        text=True, timeout=120, env=dict(os.environ, PREPWATCH_AGENT_DIR=str(deep)),
    )
    assert out.returncode != 0
    assert "too long for a Unix socket path" in out.stderr and "--state-dir" in out.stderr


def test_two_processes_claiming_one_identity_are_served_once_and_said(tmp_path):
    state = tmp_path / "agent"
    jobs: list[subprocess.Popen] = []
    try:
        with _start(["agent", "--port", "0", "--state-dir", str(state)]) as agent:
            url = _url(agent)
            env = dict(os.environ, PREPWATCH_AGENT_DIR=str(state), PREPWATCH_RUN="twin")
            for n in range(2):
                jobs.append(subprocess.Popen(
                    [sys.executable, "-c", IDLE_RANK, str(tmp_path / f"twin{n}")], env=env))
            wait_for(lambda: all((tmp_path / f"twin{n}").exists() for n in range(2)), timeout=60)
            scrape(url)
            s = scrape(url)  # the agent's own error count is rendered before the ranks'
            assert value(s, "prepwatch_build_info", run="twin") == 1  # one set of series, not two
            assert value(s, "prepwatch_agent_ranks") == 1
            assert value(s, "prepwatch_internal_errors_total", component="aggregator") >= 1
    finally:
        for job in jobs:
            job.kill()
            job.wait()
