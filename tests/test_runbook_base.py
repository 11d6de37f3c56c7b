"""The runbooks' base URL is one setting (alerts/RUNBOOK_BASE) that rules, rule tests and
dashboards all follow (issue 13 item 9)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import require_binary
from runbook_links import ROOT, RUNBOOK_PREFIX

NEW_BASE = "https://git.example.com/ml/prepwatch/-/blob/main/docs/runbooks/"


def _urls(root: Path) -> list[str]:
    urls = []
    for path in [*(root / "alerts").glob("*.rules.yml"), *(root / "tests" / "alerts").glob("*.test.yml")]:
        urls += re.findall(r"runbook_url:\s*(\S+)", path.read_text())
    for path in (root / "dashboards").glob("*.json"):
        urls += [u for u in re.findall(r'"url": "([^"]+)"', path.read_text()) if ".md" in u]
    return urls


def test_every_runbook_link_starts_with_the_one_setting() -> None:
    urls = _urls(ROOT)
    assert len(urls) > 20
    assert [u for u in urls if not u.startswith(RUNBOOK_PREFIX)] == []


def test_setting_a_new_base_moves_every_link_and_the_rule_tests_still_pass(tmp_path: Path) -> None:
    for part in ("alerts", "dashboards", "tests/alerts", "docs/runbooks"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    tool = [sys.executable, "-m", "dashboards.src.runbook_base"]
    out = subprocess.run([*tool, NEW_BASE], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "alerts" / "RUNBOOK_BASE").read_text().strip() == NEW_BASE
    urls = _urls(tmp_path)
    assert len(urls) == len(_urls(ROOT)) and all(u.startswith(NEW_BASE) for u in urls), urls
    assert json.loads((tmp_path / "dashboards" / "boxes.json").read_text())  # still valid JSON
    check = subprocess.run([*tool, "--check"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    # the promtool tests expect the rules' new annotations: they still pass together
    tests = sorted(str(p.relative_to(tmp_path / "tests" / "alerts"))
                   for p in (tmp_path / "tests" / "alerts").glob("*.test.yml"))
    run = subprocess.run([require_binary("promtool"), "test", "rules", *tests],
                         cwd=tmp_path / "tests" / "alerts", capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # and a wrong base in one file is caught
    rules = tmp_path / "alerts" / "boxes.rules.yml"
    rules.write_text(rules.read_text().replace(NEW_BASE, "https://elsewhere.example/", 1))
    check = subprocess.run([*tool, "--check"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert check.returncode == 1 and "boxes.rules.yml" in check.stderr
