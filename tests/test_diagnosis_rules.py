"""The engine and the alert rules agree on the promtool fixtures (tests/alerts/*.test.yml).

Each fixture's input series are expanded (promtool's 'a+bxN' notation) into one snapshot
per interval; at each alert_rule_test's eval_time, the engine's condition for that alert
must have held at every evaluation of the rule's ``for:`` (it fires) exactly when promtool
expects the alert, for the label sets promtool expects. Thresholds come from the rules
(prepwatch.diagnosis.thresholds), so this checks the expressions' logic, not copied numbers.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from prepwatch.diagnosis.engine import conditions
from prepwatch.diagnosis.series import Snapshot, Window, labels_of
from prepwatch.diagnosis.thresholds import load, load_rules, parse_rules, thresholds_from

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = sorted((ROOT / "tests" / "alerts").glob("*.test.yml"))
# Alerts about scraping itself (up, rank_up, a vanished rank) and the probe's own errors are
# not diagnoses of the job: listed by name so a new alert cannot skip the engine silently.
NOT_MODELLED = {
    "PrepwatchTargetDown", "PrepwatchRankLost", "PrepwatchRankVanished", "PrepwatchBoxProbeFailing",
}
KEYS = ("run", "rank", "split", "class", "kind")


def duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ms|s|m|h|d)", str(text)))


STALE = "stale"
LOOKBACK_S = 300.0  # Prometheus' default lookback: an instant query sees a 5m-old sample


def expand(values: str) -> list:
    out: list = []
    for tok in str(values).split():
        m = re.fullmatch(r"(_|stale)(?:x(\d+))?", tok)
        if m:
            out += [STALE if m.group(1) == STALE else None] * (int(m.group(2)) if m.group(2) else 1)
            continue
        m = re.fullmatch(r"([-+]?[0-9.eE]+|[-+]?Inf|NaN)(?:([-+])([0-9.eE]+))?x(\d+)", tok)
        if m:
            a, sign, b, n = float(m.group(1)), m.group(2), float(m.group(3) or 0), int(m.group(4))
            step = -b if sign == "-" else b
            out += [a + i * step for i in range(n + 1)]
            continue
        out.append(float(tok))
    return out


def parse_series(text: str) -> tuple[str, dict[str, str]]:
    m = re.fullmatch(r"\s*([\w:]+)\s*(?:\{(.*)\})?\s*", text)
    labels = dict(re.findall(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"', m.group(2) or ""))
    return m.group(1), labels


def snapshots(test: dict) -> list[Snapshot]:
    interval = duration(test.get("interval", "1m"))
    series = []
    for s in test.get("input_series", []):
        name, labels = parse_series(s["series"])
        series.append(((name, labels_of(labels)), expand(s["values"])))
    n = max(len(v) for _, v in series)
    out = []
    reach = int(LOOKBACK_S / interval)
    for i in range(n + reach):
        snap = Snapshot(i * interval)
        for key, vals in series:
            for j in range(min(i, len(vals) - 1), max(i - reach, 0) - 1, -1):
                if vals[j] == STALE:
                    break
                if vals[j] is not None:
                    snap.samples[key] = vals[j]
                    break
        out.append(snap)
    return out


def fires(snaps: list[Snapshot], t: float, alert: str, for_s: float, interval: float) -> set[tuple]:
    """Label sets for which the engine's condition held at every evaluation of ``for:``."""
    th = load()
    evals = [t - k * interval for k in range(int(math.ceil(for_s / interval)) + 1)]
    result = None
    for e in evals:
        past = [s for s in snaps if s.t <= e + 1e-6]
        if len(past) < 2:
            return set()
        held = {
            tuple((k, c.labels[k]) for k in KEYS if k in c.labels)
            for c in conditions(Window(past, start=0.0), th)
            if c.alert == alert
        }
        result = held if result is None else result & held
    return result or set()


def cases():
    for path in FIXTURES:
        doc = yaml.safe_load(path.read_text())
        for test in doc["tests"]:
            for rt in test.get("alert_rule_test", []):
                if rt["alertname"] in NOT_MODELLED:
                    continue
                yield pytest.param(
                    test, rt, id=f"{path.stem}:{test.get('name', '?')}:{rt['alertname']}@{rt['eval_time']}"
                )


@pytest.mark.parametrize(("test", "rule_test"), list(cases()))
def test_engine_agrees_with_promtool_fixture(test, rule_test):
    rules = load_rules()
    alert = rule_test["alertname"]
    assert alert in rules, f"{alert} in a fixture but not in alerts/"
    snaps = snapshots(test)
    t = duration(rule_test["eval_time"])
    interval = duration(test.get("interval", "1m"))
    got = fires(snaps, t, alert, rules[alert].for_s, interval)
    want = {
        tuple((k, a["exp_labels"][k]) for k in KEYS if k in a["exp_labels"])
        for a in rule_test.get("exp_alerts") or []
    }
    assert got == want


def test_every_alert_is_modelled_or_listed():
    rules = load_rules()
    covered = {
        rt["alertname"]
        for t in (yaml.safe_load(p.read_text()) for p in FIXTURES)
        for test in t["tests"]
        for rt in test.get("alert_rule_test", [])
    }
    assert set(rules) - NOT_MODELLED <= covered


def test_a_changed_rule_changes_the_engine_and_a_broken_one_is_named(tmp_path):
    text = (ROOT / "alerts" / "input_pipeline.rules.yml").read_text()
    changed = text.replace(
        "run_rank:prepwatch_data_wait_seconds:ratio_rate5m > 0.20",
        "run_rank:prepwatch_data_wait_seconds:ratio_rate5m > 0.35",
    )
    assert changed != text
    th = thresholds_from({**load_rules(), **parse_rules(changed)})
    assert th.wait_critical == 0.35 and th.wait_warning == 0.10
    broken = text.replace("> 0.20", "> bogus")
    with pytest.raises(RuntimeError, match="wait_critical"):
        thresholds_from({**load_rules(), **parse_rules(broken)})
