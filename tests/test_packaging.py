"""The wheel a user installs carries what the CLI needs: dashboards, alert rules, LICENSE.

Builds a real wheel from the working tree (no network: the venv's setuptools), installs it
into a bare target directory and runs the installed package from outside the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
        capture_output=True, text=True,
    ).stdout.split("\n")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(src)], capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    (built,) = out.glob("prepwatch-*.whl")
    return built


def test_wheel_ships_dashboards_alert_rules_and_license(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for folder, pattern in (("dashboards", "*.json"), ("alerts", "*.rules.yml")):
            sources = sorted((ROOT / folder).glob(pattern))
            assert sources
            for path in sources:
                assert zf.read(f"prepwatch/{folder}/{path.name}") == path.read_bytes()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_installed_wheel_finds_its_dashboards_outside_a_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    probe = (
        "import prepwatch.tools.grafana_push as g; d = g.default_dashboards_dir(); "
        "print(g.__file__); print(d); print(len(g.load_dashboards(d)))"
    )
    res = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    module, directory, count = res.stdout.split()
    assert module.startswith(str(site)), module  # the installed copy, not the checkout
    assert Path(directory) == site / "prepwatch" / "dashboards"
    assert int(count) == len(list((ROOT / "dashboards").glob("*.json")))


def test_installed_wheel_reads_its_thresholds_and_panels(wheel: Path, tmp_path: Path) -> None:
    """The diagnosis engine's thresholds come from the wheel's own alert rules."""
    site = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    probe = (
        "from prepwatch.diagnosis import thresholds as t; from prepwatch.report import panels as p; "
        "print(t.alerts_dir()); print(t.load().wait_critical); print(p.dashboards_dir())"
    )
    res = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    alerts, critical, dashboards = res.stdout.split()
    assert Path(alerts) == site / "prepwatch" / "alerts"
    assert Path(dashboards) == site / "prepwatch" / "dashboards"
    assert float(critical) == 0.20
