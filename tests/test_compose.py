"""docker-compose.yml is validated, not run (no images here): structure, mounts, configs.

Each service's bind mounts are laid out in a temporary directory as the container would
see them, so ``promtool check config`` reads the rule files through the same relative
paths Prometheus will use inside its container.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from helpers import require_binary
from runbook_links import ROOT

COMPOSE = ROOT / "docker-compose.yml"


_tool = require_binary


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _bind_mounts(service: dict) -> list[tuple[Path, str]]:
    """(host path, container path) for every ./relative bind mount of a service."""
    out = []
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        if parts[0].startswith((".", "/")):
            out.append(((ROOT / parts[0]).resolve(), parts[1]))
    return out


def _flag(service: dict, name: str) -> str:
    for arg in service.get("command", []):
        if isinstance(arg, str) and arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"no --{name}= in command {service.get('command')}")


def _container_root(service: dict, tmp_path: Path) -> Path:
    """Recreate the service's bind mounts under tmp_path as symlinks."""
    for host, container in _bind_mounts(service):
        target = tmp_path / container.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(host, target_is_directory=host.is_dir())
    return tmp_path


def test_compose_has_the_stack() -> None:
    services = _compose()["services"]
    assert {"prometheus", "alertmanager", "grafana", "webhook"} <= set(services)
    for name, service in services.items():
        assert service.get("image"), f"service {name} has no image"


def test_every_mounted_file_exists() -> None:
    missing = [
        f"{name}: {host}"
        for name, service in _compose()["services"].items()
        for host, _ in _bind_mounts(service)
        if not host.exists()
    ]
    assert not missing, f"mounted paths missing: {missing}"
    named = set(_compose().get("volumes") or {})
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in named, f"{name}: named volume {source} not declared"


def test_prometheus_config_checks_with_the_real_rules(tmp_path: Path) -> None:
    service = _compose()["services"]["prometheus"]
    root = _container_root(service, tmp_path)
    config = root / _flag(service, "config.file").lstrip("/")
    assert config.exists(), "the --config.file path is not mounted"
    res = subprocess.run(
        [_tool("promtool"), "check", "config", str(config)], capture_output=True, text=True,
        timeout=60,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    found = re.search(r"(\d+) rule files found", out)
    n_rules = len(list((ROOT / "alerts").glob("*.rules.yml")))
    assert found and int(found.group(1)) == n_rules, f"expected {n_rules} rule files: {out}"


def test_prometheus_config_checks_the_same_from_a_checkout() -> None:
    """`promtool check config deploy/prometheus/prometheus.yml`, as a person runs it from the
    repository, loads every rule file (not 0 with SUCCESS)."""
    res = subprocess.run(
        [_tool("promtool"), "check", "config", "deploy/prometheus/prometheus.yml"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    found = re.search(r"(\d+) rule files found", out)
    n_rules = len(list((ROOT / "alerts").glob("*.rules.yml")))
    assert found and int(found.group(1)) == n_rules, f"expected {n_rules} rule files: {out}"


def test_prometheus_sends_to_the_compose_alertmanager() -> None:
    services = _compose()["services"]
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [
        t for am in prom["alerting"]["alertmanagers"] for sc in am["static_configs"]
        for t in sc["targets"]
    ]
    assert targets == [_flag(services["alertmanager"], "web.listen-address")]
    scrape_jobs = [job["job_name"] for job in prom["scrape_configs"]]
    assert any("prepwatch" in job for job in scrape_jobs), (
        "the TargetDown rule selects job=~'.*prepwatch.*'"
    )


def test_alertmanager_config_checks(tmp_path: Path) -> None:
    service = _compose()["services"]["alertmanager"]
    root = _container_root(service, tmp_path)
    config = root / _flag(service, "config.file").lstrip("/")
    res = subprocess.run(
        [_tool("amtool"), "check-config", str(config)], capture_output=True, text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_alertmanager_webhook_reaches_the_receiver_service() -> None:
    services = _compose()["services"]
    am = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    urls = [w["url"] for r in am["receivers"] for w in r.get("webhook_configs", [])]
    command = services["webhook"]["command"]
    host = command[command.index("--host") + 1]
    port = command[command.index("--port") + 1]
    assert f"http://{host}:{port}/alerts" in urls
    # the receiver script mounted into the service is the repository's
    mounts = dict((c, h) for h, c in _bind_mounts(services["webhook"]))
    assert mounts[command[2]] == (ROOT / "deploy/webhook/receiver.py").resolve()


def test_grafana_provisioning(tmp_path: Path) -> None:
    service = _compose()["services"]["grafana"]
    root = _container_root(service, tmp_path)
    prov = root / "etc/grafana/provisioning"
    sources = yaml.safe_load((prov / "datasources/prometheus.yml").read_text())["datasources"]
    assert [s["uid"] for s in sources] == ["prepwatch-prometheus"], "fixed datasource uid"
    assert sources[0]["type"] == "prometheus"
    prom_addr = _flag(_compose()["services"]["prometheus"], "web.listen-address")
    assert sources[0]["url"] == f"http://{prom_addr}"
    providers = yaml.safe_load((prov / "dashboards/prepwatch.yml").read_text())["providers"]
    for provider in providers:
        path = root / provider["options"]["path"].lstrip("/")
        dashboards = sorted(p.name for p in path.glob("*.json"))
        assert dashboards == sorted(p.name for p in (ROOT / "dashboards").glob("*.json"))
        assert dashboards, "no dashboards provisioned"
    home = service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (root / home.lstrip("/")).is_file()
