"""The endpoint under idle, slow and many clients, and across fork (issue 12, items 1, 4, 5)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import free_port, wait_for
from prometheus_client.core import GaugeMetricFamily

from prepwatch.agent.agent import Agent
from prepwatch.context import Context
from prepwatch.exporter.http import MetricsServer
from prepwatch.identity import Identity

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "c.pem", d / "k.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], capture_output=True,
    )
    assert made.returncode == 0, made.stderr
    return str(cert), str(key)


def _https_get(url: str, cafile: str, timeout: float = 5.0) -> bytes:
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False
    return urllib.request.urlopen(url, context=context, timeout=timeout).read()


def test_idle_tcp_connection_does_not_block_tls_scrapes_of_the_standalone_endpoint(cert):
    server = MetricsServer(Context.create(Identity(run="tls")).registry, port=0, tls=cert)
    idle = socket.create_connection((server.host, server.port))  # never says hello
    try:
        body = _https_get(server.url, cert[0])
        assert b"prepwatch_internal_errors_total" in body
    finally:
        idle.close()
        server.close()


def test_idle_tcp_connection_does_not_block_tls_scrapes_of_the_agent(cert, tmp_path):
    agent = Agent(tmp_path / "state", port=0, sources=False, tls=cert)
    idles = [socket.create_connection(("127.0.0.1", agent.server.port)) for _ in range(3)]
    try:
        assert b"prepwatch_agent_ranks" in _https_get(agent.url, cert[0])
    finally:
        for s in idles:
            s.close()
        agent.close()


def _closed_by_server(sock: socket.socket, within: float) -> float:
    """Seconds until the server closes ``sock`` (reads return EOF or reset)."""
    t0 = time.monotonic()
    sock.settimeout(within)
    try:
        while sock.recv(1024):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - t0


def test_an_idle_or_dribbling_client_is_cut_at_the_connection_deadline():
    server = MetricsServer(Context.create(Identity(run="d")).registry, port=0, deadline_s=1.0)
    try:
        with socket.create_connection((server.host, server.port)) as idle:
            assert _closed_by_server(idle, within=15) < 10
        # One byte every 0.3 s resets a per-read timeout forever; the deadline is per connection.
        slow = socket.create_connection((server.host, server.port))
        stop = threading.Event()

        def dribble() -> None:
            for ch in b"GET /metrics HTTP/1.0\r\nX-Slow: " + b"a" * 200:
                if stop.is_set():
                    return
                try:
                    slow.send(bytes([ch]))
                except OSError:
                    return
                time.sleep(0.3)

        t = threading.Thread(target=dribble, daemon=True)
        t.start()
        try:
            assert _closed_by_server(slow, within=30) < 15
        finally:
            stop.set()
            slow.close()
        wait_for(lambda: server._httpd.active_connections() == 0, timeout=10)
    finally:
        server.close()


def test_connections_beyond_the_cap_are_refused_fast_and_threads_stay_bounded():
    server = MetricsServer(Context.create(Identity(run="c")).registry, port=0,
                           max_connections=8, deadline_s=30.0)
    before = threading.active_count()
    idles = []
    try:
        for _ in range(8):
            idles.append(socket.create_connection((server.host, server.port)))
        wait_for(lambda: server._httpd.active_connections() == 8, timeout=10)
        extra = [socket.create_connection((server.host, server.port)) for _ in range(50)]
        for s in extra:  # refused at once, with a 503 (not after the 30 s deadline)
            s.settimeout(10)
            assert s.recv(64).startswith(b"HTTP/1.0 503")
            s.close()
        assert server._httpd.refused == 50
        assert threading.active_count() <= before + 8 + 1
        for s in idles:
            s.close()
        wait_for(lambda: server._httpd.active_connections() == 0, timeout=10)
        assert b"prepwatch_internal_errors_total" in urllib.request.urlopen(server.url, timeout=5).read()
    finally:
        for s in idles:
            s.close()
        server.close()


class SlowCollector:
    def __init__(self) -> None:
        self.calls = 0

    def collect(self):
        self.calls += 1
        time.sleep(0.3)
        yield GaugeMetricFamily("slow_render", "Renders so far.", value=self.calls)


def test_concurrent_scrapes_share_one_render_and_a_lone_scrape_is_fresh():
    collector = SlowCollector()
    server = MetricsServer(collector, port=0)
    try:
        with ThreadPoolExecutor(20) as pool:
            bodies = list(pool.map(lambda _: urllib.request.urlopen(server.url, timeout=30).read(),
                                   range(20)))
        assert all(b"slow_render" in b for b in bodies)
        assert collector.calls <= 6, collector.calls  # 20 scrapes, a handful of renders
        calls = collector.calls
        urllib.request.urlopen(server.url, timeout=30).read()
        urllib.request.urlopen(server.url, timeout=30).read()
        assert collector.calls == calls + 2  # sequential scrapes never see an old body
    finally:
        server.close()


def test_an_idle_open_connection_does_not_make_a_lone_scrape_share():
    """Sharing follows scrapes in flight, not open sockets (keep-alive, half-closed peers)."""
    collector = SlowCollector()
    server = MetricsServer(collector, port=0)
    idle = socket.create_connection((server.host, server.port))
    try:
        wait_for(lambda: server._httpd.active_connections() >= 1, timeout=10)
        for expected in (1, 2, 3):
            urllib.request.urlopen(server.url, timeout=30).read()
            assert collector.calls == expected
    finally:
        idle.close()
        server.close()


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return out


def test_dataloader_workers_do_not_keep_the_port_after_the_main_process_is_killed(tmp_path):
    port = free_port()
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time, torch
        from torch.utils.data import DataLoader
        import prepwatch
        prepwatch.start(run="fork", port={port}, sources=False)
        loader = DataLoader(list(range(64)), batch_size=4, num_workers=2, persistent_workers=True)
        next(iter(loader))
        print("ready", flush=True)
        time.sleep(120)
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    workers: list[int] = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        workers = _children(proc.pid)
        assert len(workers) >= 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert any(Path(f"/proc/{w}").exists() for w in workers)  # workers outlive it a while
        with socket.socket() as s:  # what http.server does: SO_REUSEADDR, then bind + listen
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
    finally:
        proc.kill()
        proc.stdout.close()
        proc.wait()
        for w in workers:
            try:
                os.kill(w, signal.SIGKILL)
            except ProcessLookupError:
                pass
