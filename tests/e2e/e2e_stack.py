"""Real Prometheus, Alertmanager, a webhook receiver and `prepwatch demo`, on 127.0.0.1.

The harness; conftest.py turns it into fixtures.

Everything binds to free loopback ports and keeps its state in a temporary directory;
every process is started here and stopped here (by pid). Prometheus loads a copy of the
real rule files with their windows and ``for:`` shortened (see ``E2E_WINDOWS``), and
Alertmanager the real deploy/alertmanager/alertmanager.yml with short group timings and
its webhook pointed at the receiver of deploy/webhook/receiver.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import psutil
import yaml
from helpers import require_binary

ROOT = Path(__file__).resolve().parents[2]
# The rules' windows, scaled down so an alert can fire within a test: a 1 s scrape keeps
# 15+ samples in each window. Every `for:` becomes E2E_FOR.
E2E_WINDOWS = {"5m": "15s", "10m": "30s"}
E2E_FOR = "10s"
READY_TIMEOUT_S = 30.0
# The healthy run trains this long after its first step before it is judged: longer than
# the longest shortened window plus E2E_FOR, so an alert that would fire has fired.
HEALTHY_WARMUP_S = 45.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


need = require_binary


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return resp.read()


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def shorten_rules(text: str) -> str:
    """A rule file with the e2e windows and for: durations (nothing else changes)."""
    for long, short in E2E_WINDOWS.items():
        text = text.replace(f"[{long}]", f"[{short}]")
    return re.sub(r"^(\s*)for: \S+", rf"\1for: {E2E_FOR}", text, flags=re.M)


class Proc:
    """A child process with its output in a log file; stopped by pid, children too."""

    def __init__(self, name: str, cmd: list[str], log_dir: Path, env: Optional[dict] = None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.started_at = time.time()
        self.popen = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT),
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 40) -> str:
        self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
        if self.alive():
            try:
                children = psutil.Process(self.popen.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            self.popen.send_signal(sig)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
            for child in children:  # the demo's training job and its DataLoader workers
                try:
                    child.wait(2)
                except psutil.TimeoutExpired:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
        self._log.close()


@dataclass
class Webhook:
    """Notifications Alertmanager delivered: (unix time received, payload)."""

    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Event = field(default_factory=threading.Event)

    def sink(self, payload: dict[str, Any], when: float) -> None:
        with self.lock:
            self.received.append((when, payload))
        self.arrived.set()

    def alerts(self) -> list[tuple[float, dict[str, Any]]]:
        """(received time, alert) for every alert of every notification so far."""
        with self.lock:
            return [(t, a) for t, p in self.received for a in p.get("alerts", [])]


@dataclass
class Stack:
    prometheus_url: str
    alertmanager_url: str
    demo_url: str
    demo: Proc
    webhook: Webhook
    procs: list[Proc]

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = json.loads(http_get(url))
        if body.get("status") != "success":
            raise AssertionError(f"query failed: {expr}: {body}")
        return body["data"]["result"]

    def firing(self, names: set[str]) -> list[dict[str, Any]]:
        return [
            s["metric"] for s in self.query('ALERTS{alertstate="firing"}')
            if s["metric"].get("alertname") in names
        ]

    def diagnostics(self) -> str:
        return "\n".join(f"--- {p.name} ({p.log_path})\n{p.log_tail()}" for p in self.procs)


def input_pipeline_alerts() -> set[str]:
    text = (ROOT / "alerts" / "input_pipeline.rules.yml").read_text()
    return {
        r["alert"] for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "alert" in r
    }


def _load_receiver() -> Any:
    spec = importlib.util.spec_from_file_location(
        "prepwatch_webhook_receiver", ROOT / "deploy" / "webhook" / "receiver.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _write_configs(work: Path, ports: dict[str, int]) -> tuple[Path, Path]:
    rules = work / "rules"
    rules.mkdir()
    for path in sorted((ROOT / "alerts").glob("*.rules.yml")):
        (rules / path.name).write_text(shorten_rules(path.read_text()))
    prom = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules / "*.rules.yml")],
        "alerting": {"alertmanagers": [
            {"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}
        ]},
        "scrape_configs": [
            {"job_name": "prepwatch",
             "static_configs": [{"targets": [f"127.0.0.1:{ports['demo']}"]}]},
        ],
    }
    prom_path = work / "prometheus.yml"
    prom_path.write_text(yaml.safe_dump(prom))

    am = yaml.safe_load((ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    am["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for receiver in am["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:{ports['webhook']}/alerts"
    am_path = work / "alertmanager.yml"
    am_path.write_text(yaml.safe_dump(am))
    return prom_path, am_path


@contextlib.contextmanager
def running_stack(work: Path, demo_args: list[str]) -> Iterator[Stack]:
    """Start webhook, Alertmanager, the demo (fault onset = its start), then Prometheus."""
    prometheus = need("prometheus")
    alertmanager = need("prometheus-alertmanager")
    ports = {name: free_port() for name in ("prometheus", "alertmanager", "webhook", "demo")}
    prom_cfg, am_cfg = _write_configs(work, ports)
    logs = work / "logs"
    logs.mkdir()

    webhook = Webhook()
    receiver = _load_receiver()
    server = receiver.make_server("127.0.0.1", ports["webhook"], webhook.sink)
    receiver.serve_in_thread(server)
    procs: list[Proc] = []
    stack: Optional[Stack] = None
    try:
        am = Proc("alertmanager", [
            alertmanager, f"--config.file={am_cfg}", f"--storage.path={work / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
            "--cluster.listen-address=", "--log.level=warn",
        ], logs)
        procs.append(am)
        am_url = f"http://127.0.0.1:{ports['alertmanager']}"
        wait_until(lambda: am.alive() and http_get(f"{am_url}/-/ready") is not None,
                   READY_TIMEOUT_S, "Alertmanager ready")
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        demo = Proc("demo", [
            sys.executable, "-m", "prepwatch.cli.main", "demo", "--port", str(ports["demo"]),
            "--status-every", "5", *demo_args,
        ], logs, env=env)
        procs.append(demo)
        demo_url = f"http://127.0.0.1:{ports['demo']}/metrics"
        # Prometheus starts once the endpoint answers: a scrape before the agent listens
        # would count as a target down.
        wait_until(lambda: demo.alive() and http_get(demo_url) is not None, READY_TIMEOUT_S,
                   "the demo's /metrics")
        prom = Proc("prometheus", [
            prometheus, f"--config.file={prom_cfg}", f"--storage.tsdb.path={work / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}", "--log.level=warn",
        ], logs)
        procs.append(prom)
        prom_url = f"http://127.0.0.1:{ports['prometheus']}"
        wait_until(lambda: prom.alive() and http_get(f"{prom_url}/-/ready") is not None,
                   READY_TIMEOUT_S, "Prometheus ready")
        stack = Stack(prom_url, am_url, demo_url, demo, webhook, procs)
        yield stack
    except BaseException:
        if stack is not None:
            print(stack.diagnostics(), file=sys.stderr)
        raise
    finally:
        for proc in reversed(procs):
            proc.stop(signal.SIGINT if proc.name == "demo" else signal.SIGTERM)
        server.shutdown()
        server.server_close()


