"""Shared runner for every rule file in alerts/ and every promtool test in tests/alerts/.

What it holds each area to (see /work/shared/STYLE.md): rule files pass
``promtool check rules``; unit tests pass ``promtool test rules``; every alert has a unit
test where it fires and one where it is quiet; every alert carries ``for:``, a severity,
a static summary, a templated description and a runbook link to an existing section;
recording rules are named ``level:metric:operations`` with ``metric`` a family exported
as docs/metrics.md names it; each rule file opens with its thresholds table.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import require_binary
from metric_families import documented_names, is_exported_family
from runbook_links import ROOT, runbook_problem

ALERTS_DIR = ROOT / "alerts"
TESTS_DIR = ROOT / "tests" / "alerts"
RULE_FILES = sorted(ALERTS_DIR.glob("*.rules.yml"))
TEST_FILES = sorted(TESTS_DIR.glob("*.test.yml"))
SEVERITIES = {"critical", "warning", "info"}
ALERT_NAME = re.compile(r"^Prepwatch[A-Z][A-Za-z0-9]*$")
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")


_tool = require_binary


def _load(path: Path) -> dict:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _rules(path: Path) -> list[dict]:
    return [rule for group in _load(path)["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, tuple[Path, dict]]:
    out: dict[str, tuple[Path, dict]] = {}
    for path in RULE_FILES:
        for rule in _rules(path):
            if "alert" in rule:
                assert rule["alert"] not in out, f"alert {rule['alert']} defined twice"
                out[rule["alert"]] = (path, rule)
    return out


def _cases() -> dict[str, dict[str, list[str]]]:
    """alertname -> {"fires": [where], "quiet": [where]} over all promtool test files."""
    cases: dict[str, dict[str, list[str]]] = {}
    for path in TEST_FILES:
        for test in _load(path).get("tests") or []:
            for case in test.get("alert_rule_test") or []:
                kind = "fires" if case.get("exp_alerts") else "quiet"
                where = f"{path.name}: {test.get('name', '?')} @ {case.get('eval_time')}"
                cases.setdefault(case["alertname"], {"fires": [], "quiet": []})[kind].append(where)
    return cases


def test_there_are_rules_and_tests() -> None:
    assert RULE_FILES, "no alerts/*.rules.yml"
    assert TEST_FILES, "no tests/alerts/*.test.yml"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    res = subprocess.run(
        [_tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(path: Path) -> None:
    res = subprocess.run(
        [_tool("promtool"), "test", "rules", str(path)], capture_output=True, text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = _cases()
    missing = []
    for name in sorted(_alerts()):
        found = cases.get(name, {"fires": [], "quiet": []})
        if not found["fires"]:
            missing.append(f"{name}: no alert_rule_test where it fires (non-empty exp_alerts)")
        if not found["quiet"]:
            missing.append(f"{name}: no alert_rule_test where it is quiet (exp_alerts: [])")
    assert not missing, "\n".join(missing)


def test_tests_name_only_existing_alerts() -> None:
    unknown = sorted(set(_cases()) - set(_alerts()))
    assert not unknown, f"promtool tests name alerts no rule file defines: {unknown}"


@pytest.mark.parametrize("name", sorted(_alerts()))
def test_alert_metadata(name: str) -> None:
    path, rule = _alerts()[name]
    where = f"{path.name}: {name}"
    assert ALERT_NAME.match(name), f"{where}: name must be CamelCase with the Prepwatch prefix"
    assert rule.get("for"), f"{where}: needs for:"
    severity = (rule.get("labels") or {}).get("severity")
    assert severity in SEVERITIES, f"{where}: labels.severity must be one of {SEVERITIES}"
    ann = rule.get("annotations") or {}
    summary, description = ann.get("summary", ""), ann.get("description", "")
    assert summary and "{{" not in summary, f"{where}: summary must be a static sentence"
    assert "{{" in description and "$labels" in description, (
        f"{where}: description must be templated with labels"
    )
    url = ann.get("runbook_url", "")
    area = path.name[: -len(".rules.yml")]
    expected = f"docs/runbooks/{area}.md#{name.lower()}"
    assert url.endswith(expected), f"{where}: runbook_url must end in {expected}, got {url}"
    problem = runbook_problem(url)
    assert problem is None, f"{where}: {problem}"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_recording_rule_names_and_thresholds_table(path: Path) -> None:
    for rule in _rules(path):
        if "record" in rule:
            assert RECORD_NAME.match(rule["record"]), (
                f"{path.name}: recording rule {rule['record']} is not level:metric:operations"
            )
    head = path.read_text(encoding="utf-8").split("groups:", 1)[0]
    assert re.search(r"^#\s*Thresholds", head, re.M), (
        f"{path.name}: put the commented Thresholds table at the top of the file"
    )


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_alerts_share_a_group_with_the_records_they_read(path):
    """Groups evaluate independently: an alert in another group than its recording rules
    reads them one evaluation late, which made promtool tests at a `for:` boundary flaky."""
    groups = _load(path)["groups"]
    recorded = {r["record"]: g["name"] for g in groups for r in g["rules"] if "record" in r}
    for group in groups:
        for rule in group["rules"]:
            if "alert" in rule:
                for name, where in recorded.items():
                    if name in rule["expr"]:
                        assert where == group["name"], f"{rule['alert']} reads {name} from {where}"


def test_the_family_check_knows_the_contract() -> None:
    """The check below can fail: it tells exported families from made-up ones."""
    assert len(documented_names()) >= 30
    for real in ("prepwatch_data_wait_seconds", "prepwatch_step_duration_seconds_count",
                 "prepwatch_steps", "prepwatch_gpu_busy_seconds", "prepwatch_class_recall_ratio"):
        assert is_exported_family(real), real
    for made_up in ("prepwatch_data_wait", "prepwatch_gpu_busy", "prepwatch_ranks",
                    "prepwatch_own_compute_seconds", "prepwatch_class_recent_recall"):
        assert not is_exported_family(made_up), made_up


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_recording_rules_name_an_exported_metric(path: Path) -> None:
    """``level:metric:operations``: the middle part is the exported family the rule is
    computed from (a counter may drop ``_total``), never a made-up quantity; what the rule
    computes belongs in ``operations``. Tools that resolve the middle part as a metric
    (metadata look-ups, linters) flag anything else as undefined."""
    bad = [rule["record"] for rule in _rules(path)
           if "record" in rule and not is_exported_family(rule["record"].split(":")[1])]
    assert not bad, (
        f"{path.name}: recording rules whose middle part is not a metric family in "
        f"docs/metrics.md (put the source metric there, the operation last): {bad}"
    )
