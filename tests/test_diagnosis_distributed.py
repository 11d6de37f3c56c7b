"""Findings for the alerts the engine learned last: input and compute stragglers of
synchronous runs, a run slower than its own steady state, small files slow to read, and a
rare class hidden by augmentation in training.

Two kinds of data: the promtool fixtures (tests/alerts/*.test.yml), replayed as snapshots
so each finding is checked on the very series whose alert promtool expects, with the
figures the alert descriptions print; and recorded-style /metrics text of whole jobs
(diagnosis_series.py), where the verdict must name the right rank and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from diagnosis_series import Job, Rank
from test_diagnosis_rules import duration, snapshots

from prepwatch.diagnosis import diagnose
from prepwatch.diagnosis.findings import SEVERITY_ORDER, Finding
from prepwatch.diagnosis.series import Window

FIXTURES = Path(__file__).resolve().parent / "alerts"


def fixture_window(file: str, name_starts: str, at: str) -> Window:
    doc = yaml.safe_load((FIXTURES / file).read_text())
    test = next(t for t in doc["tests"] if t["name"].startswith(name_starts))
    t = duration(at)
    return Window([s for s in snapshots(test) if s.t <= t + 1e-6], start=0.0)


def evidence(f: Finding, starts: str) -> float:
    return next(e.value for e in f.evidence if e.what.startswith(starts))


def by_key(findings: list[Finding], key: str) -> dict[tuple[str, ...], Finding]:
    return {tuple(sorted(f.scope.items())): f for f in findings if f.key == key}


def check_shape(findings: list[Finding]) -> None:
    for f in findings:
        assert f.severity in SEVERITY_ORDER and f.verdict and f.fix and f.causes and f.alerts
        assert f.evidence and all(e.text() for e in f.evidence)
        assert "\n" not in f.verdict


def test_stragglers_on_the_promtool_fixture_name_the_rank_with_the_alerts_figures():
    findings = diagnose(fixture_window("distributed.test.yml", "input and compute stragglers", "25m"))
    check_shape(findings)
    inputs = by_key(findings, "straggler.input")
    computes = by_key(findings, "straggler.compute")
    assert set(inputs) == {(("rank", "2"), ("run", "slowcollate")), (("rank", "1"), ("run", "two-input"))}
    assert set(computes) == {(("rank", "2"), ("run", "slowcompute")), (("rank", "0"), ("run", "two-compute"))}
    # the alert descriptions print 89% and 81.82% for these runs
    slow = inputs[(("rank", "2"), ("run", "slowcollate"))]
    assert slow.alerts == ["PrepwatchInputStragglerRank"]
    assert evidence(slow, "extra data wait") == pytest.approx(0.89, abs=0.005)
    two = computes[(("rank", "0"), ("run", "two-compute"))]
    assert evidence(two, "missing collective wait") == pytest.approx(0.8182, abs=0.0005)
    # where rank 2's step goes in the slow-compute case (the fixture's promql test)
    sc = computes[(("rank", "2"), ("run", "slowcompute"))]
    assert evidence(sc, "own compute per step") == pytest.approx(0.168, abs=0.001)
    assert evidence(sc, "peers' own compute") == pytest.approx(0.006, abs=0.001)
    # every rank of allslow waits for data alike: input-bound, but no rank is a straggler
    stragglers = {f.scope["run"] for f in findings if f.family == "straggler"}
    assert not stragglers & {"healthy", "allslow", "two-healthy"}
    assert {f.family for f in findings if f.scope["run"] == "allslow"} == {"input_bound"}


def test_throughput_regression_on_the_promtool_fixture():
    w = fixture_window("distributed.test.yml", "throughput regression", "135m")
    found = [f for f in diagnose(w) if f.key == "throughput_regression"]
    check_shape(found)
    assert [f.scope for f in found] == [{"run": "regress"}]
    f = found[0]
    assert evidence(f, "step p50 now") == pytest.approx(0.175, abs=0.001)
    assert evidence(f, "step p50 over the baseline") == pytest.approx(0.075, abs=0.001)
    assert evidence(f, "now / baseline") == pytest.approx(2.33, abs=0.01)
    # before 90 minutes of history there is no baseline, whatever the step times do
    early = fixture_window("distributed.test.yml", "throughput regression", "85m")
    assert not [f for f in diagnose(early) if f.key == "throughput_regression"]


def test_small_files_slow_to_read_on_the_promtool_fixture():
    w = fixture_window("input_pipeline.test.yml", "Small files slow to read", "30m")
    findings = diagnose(w)
    check_shape(findings)
    assert [(f.key, f.scope) for f in findings] == [("storage.slow_reads", {"run": "slow", "rank": "0"})]
    f = findings[0]
    assert evidence(f, "files read") == pytest.approx(100, rel=0.01)
    assert evidence(f, "bytes per file") == pytest.approx(102400, rel=0.01)
    assert evidence(f, "mean open to close") == pytest.approx(0.060, abs=0.001)


def test_rare_class_augmentation_gap_on_the_promtool_fixture():
    w = fixture_window("class_health.test.yml", "augmented-train vs clean-eval gap", "30m")
    findings = diagnose(w)
    check_shape(findings)
    assert [(f.key, f.severity, f.scope) for f in findings] == [
        ("rare_augmentation_gap", "info", {"run": "gap", "split": "eval", "class": "spider"})
    ]
    assert evidence(findings[0], "gap beyond") == pytest.approx(0.45, abs=0.001)
    assert evidence(findings[0], "clean eval recall") == pytest.approx(0.8, abs=0.001)
    assert evidence(findings[0], "augmented training recall") == pytest.approx(0.3, abs=0.001)


def ddp(shares: list[tuple[float, float]], step_s: float = 0.2) -> Job:
    """A synchronous job: every rank steps at the same period; (data wait, collective wait)
    shares of it per rank."""
    return Job(
        [
            Rank(rank=str(i), step_s=step_s, wait_share=d, collective_share=c)
            for i, (d, c) in enumerate(shares)
        ],
        gpu_busy=0.95,
    )


def test_healthy_synchronous_job_is_silent():
    # ranks take turns being last by a few percent: no straggler
    assert diagnose(ddp([(0.01, 0.08), (0.01, 0.05), (0.012, 0.03), (0.01, 0.06)]).record(900)) == []


def test_input_straggler_of_a_synchronous_job():
    # rank 3 waits 30% of the step for data; its peers wait for it in the all-reduce
    job = ddp([(0.01, 0.32), (0.01, 0.31), (0.01, 0.33), (0.31, 0.02)])
    findings = diagnose(job.record(900))
    check_shape(findings)
    stragglers = [(f.key, f.scope["rank"]) for f in findings if f.family == "straggler"]
    assert stragglers == [("straggler.input", "3")]
    straggler = by_key(findings, "straggler.input")[(("rank", "3"), ("run", "job"))]
    assert evidence(straggler, "extra data wait") == pytest.approx(0.30, abs=0.01)


def test_compute_straggler_of_a_synchronous_job():
    # rank 0 does extra work after backward: it waits least in the all-reduce
    job = ddp([(0.01, 0.02), (0.01, 0.35), (0.01, 0.34), (0.01, 0.36)])
    found = [f for f in diagnose(job.record(900)) if f.family == "straggler"]
    check_shape(found)
    assert [(f.key, f.scope["rank"]) for f in found] == [("straggler.compute", "0")]
    assert evidence(found[0], "missing collective wait") == pytest.approx(0.33, abs=0.01)


def test_a_job_slower_than_its_own_past_hour():
    job = Job([Rank(step_s=0.1)])
    before = job.record(100 * 60, every=60)
    for r in job.ranks:
        r.step_s = 0.25
    after = job.record(30 * 60, every=60)
    w = Window(before.snapshots + after.snapshots[1:], start=before.start)
    found = [f for f in diagnose(w) if f.key == "throughput_regression"]
    check_shape(found)
    assert [f.scope for f in found] == [{"run": "job"}]
    assert evidence(found[0], "now / baseline") > 1.5
    # the same job without the slowdown is silent
    steady = Job([Rank(step_s=0.1)]).record(130 * 60, every=60)
    assert diagnose(steady) == []
