"""The diagnosis engine on recorded-style series: every finding, and silence when healthy.

The series are the /metrics text a job with the described behaviour exports (see
diagnosis_series.py), parsed by the engine's parser; thresholds come from alerts/.
"""

from __future__ import annotations

import math

import pytest
from diagnosis_series import Job, Rank

from prepwatch.diagnosis import diagnose
from prepwatch.diagnosis.findings import SEVERITY_ORDER, Finding


def keys(findings: list[Finding]) -> list[str]:
    return [f.key for f in findings]


def check_shape(findings: list[Finding]) -> None:
    for f in findings:
        assert f.severity in SEVERITY_ORDER and f.verdict and f.fix and f.causes
        assert f.evidence and all(e.unit is not None and e.text() for e in f.evidence)
        assert "\n" not in f.verdict


def test_healthy_single_rank_is_silent():
    w = Job([Rank()]).record(900)
    assert diagnose(w) == []


def test_healthy_four_ranks_with_a_fed_gpu_are_silent():
    w = Job([Rank(rank=str(i), step_s=0.1 + 0.01 * i) for i in range(4)], gpu_busy=0.95).record(900)
    assert diagnose(w) == []


def test_waiting_behind_a_busy_gpu_is_not_input_bound():
    w = Job([Rank(wait_share=0.3)], gpu_busy=0.95).record(600)
    assert diagnose(w) == []


@pytest.mark.parametrize(
    ("rank", "job", "key"),
    [
        # workers saturated, host saturated too: decode/augmentation is the cost
        (
            Rank(wait_share=0.3, stage_s={"read": 0.0002, "decode": 0.004, "transform": 0.003}),
            dict(worker_cpu=0.97, host_busy=0.95, workers=15),
            "input_bound.cpu",
        ),
        # workers saturated, host mostly idle: more workers
        (
            Rank(wait_share=0.3, stage_s={"read": 0.0002, "decode": 0.004, "transform": 0.003}),
            dict(worker_cpu=0.97, host_busy=0.2, workers=2),
            "input_bound.workers",
        ),
        # workers mostly waiting on reads (no file hook): storage
        (
            Rank(wait_share=0.3, stage_s={"read": 0.01, "decode": 0.001, "transform": 0.001}),
            dict(worker_cpu=0.1),
            "input_bound.storage",
        ),
        # one small file per sample with slow opens: the small-file storm
        (
            Rank(
                wait_share=0.3,
                stage_s={"read": 0.03, "decode": 0.0005, "transform": 0.0005},
                opens_per_sample=1,
                open_s=0.03,
                bytes_per_open=3072,
            ),
            dict(worker_cpu=0.05),
            "input_bound.small_files",
        ),
        # the workers are fast, the loop still waits: collate/transfer
        (
            Rank(wait_share=0.3, stage_s={"read": 0.00001, "decode": 0.00001, "transform": 0.00001}),
            dict(worker_cpu=0.05),
            "input_bound.transfer",
        ),
    ],
)
def test_input_bound_is_split_by_where_the_time_goes(rank, job, key):
    findings = diagnose(Job([rank], **job).record(600))
    check_shape(findings)
    assert keys(findings)[0] == key
    top = findings[0]
    assert top.severity == "critical" and "PrepwatchInputBoundCritical" in top.alerts
    share = next(e for e in top.evidence if e.what.startswith("data-wait"))
    assert share.unit == "%" and share.value == pytest.approx(0.3, abs=0.01)


def test_input_bound_warning_tier():
    findings = diagnose(Job([Rank(wait_share=0.15)]).record(600))
    assert findings[0].family == "input_bound" and findings[0].severity == "warning"
    assert findings[0].alerts == ["PrepwatchInputBoundWarning"]


def test_gpu_starved_by_input():
    findings = diagnose(Job([Rank(wait_share=0.3)], gpu_busy=0.4).record(600))
    assert findings[0].family == "input_bound"
    assert "PrepwatchGpuStarvedByInput" in findings[0].alerts
    assert any(e.what == "GPU busy" and e.value == pytest.approx(0.4, abs=0.01) for e in findings[0].evidence)


def test_gpu_idle_while_the_loop_does_not_wait():
    findings = diagnose(Job([Rank(wait_share=0.02)], gpu_busy=0.4).record(600))
    check_shape(findings)
    assert keys(findings) == ["gpu_idle_elsewhere"]


def test_stalled():
    job = Job([Rank(rank="0", stalled_at=1_800_000_000.0 + 120), Rank(rank="1")])
    findings = diagnose(job.record(900))
    check_shape(findings)
    assert findings[0].key == "stalled" and findings[0].scope == {"run": "job", "rank": "0"}
    assert findings[0].evidence[0].value == pytest.approx(780, abs=1)


def test_step_time_tail():
    findings = diagnose(Job([Rank(slow_every=25, slow_factor=8)]).record(900))
    check_shape(findings)
    assert keys(findings) == ["step_tail"]


def test_a_short_tail_without_enough_steps_is_not_judged():
    findings = diagnose(Job([Rank(step_s=5.0, slow_every=25, slow_factor=8)]).record(600))
    assert "step_tail" not in keys(findings)


def test_straggling_rank():
    ranks = [Rank(rank=str(i)) for i in range(3)] + [Rank(rank="3", step_s=0.35)]
    findings = diagnose(Job(ranks).record(900))
    check_shape(findings)
    assert keys(findings) == ["straggler"] and findings[0].scope["rank"] == "3"


def test_two_ranks_cannot_name_a_straggler():
    assert diagnose(Job([Rank(rank="0"), Rank(rank="1", step_s=0.35)]).record(900)) == []


def test_worker_memory_growing():
    findings = diagnose(Job([Rank()], rss_growth_per_s=0.5 * 2**20).record(900))
    check_shape(findings)
    assert keys(findings) == ["worker_memory"]
    assert "13246" in findings[0].causes[0]


def test_worker_memory_that_levels_off_is_fine():
    job = Job([Rank()], rss_growth_per_s=1 * 2**20)
    w1 = job.record(120)
    job.rss_growth_per_s = 0.0
    job.worker_rss += 120 * 2**20
    w2 = job.record(600)
    w = type(w1)(w1.snapshots + w2.snapshots[1:], start=w1.start)
    # 120 MiB early, then flat for 10 minutes: not "rising in most intervals"
    assert "worker_memory" not in keys(diagnose(w))


def test_small_file_storm_without_an_input_bound_loop():
    r = Rank(wait_share=0.02, opens_per_sample=1, open_s=0.03, bytes_per_open=3072)
    findings = diagnose(Job([r]).record(600))
    assert keys(findings) == ["storage.small_files"]


def _counters(name: str, label: str, rates: dict[str, float]):
    def lines(job: Job, t: float) -> list[str]:
        dt = t - 1_800_000_000.0
        return [f'{name}{{run="job",rank="0",{label}="{k}"}} {v * dt}' for k, v in rates.items()]

    return lines


@pytest.mark.parametrize(
    ("extra", "key", "severity"),
    [
        (
            [
                _counters(
                    "prepwatch_input_contract_violations_total", "kind", {"forgot_255": 1.0, "bgr": 0.0}
                ),
                lambda j, t: [
                    f'prepwatch_input_batches_checked_total{{run="job",rank="0"}} {t - 1_800_000_000.0}'
                ],
            ],
            "off_contract",
            "critical",
        ),
        (
            [
                _counters("prepwatch_input_contract_violations_total", "kind", {"bgr": 0.1}),
                lambda j, t: [
                    f'prepwatch_input_batches_checked_total{{run="job",rank="0"}} {t - 1_800_000_000.0}'
                ],
            ],
            "off_contract",
            "warning",
        ),
        (
            [
                _counters(
                    "prepwatch_box_alignment_checks_total",
                    "result",
                    {"aligned": 0.5, "misaligned": 0.5, "error": 0.0},
                )
            ],
            "boxes_misaligned",
            "critical",
        ),
        (
            [_counters("prepwatch_boxes_total", "outcome", {"valid": 1.0, "out_of_bounds": 0.2})],
            "boxes_invalid",
            "warning",
        ),
        (
            [_counters("prepwatch_clips_total", "outcome", {"consistent": 0.2, "inconsistent": 0.8})],
            "clips_inconsistent",
            "warning",
        ),
    ],
)
def test_data_integrity_findings(extra, key, severity):
    findings = diagnose(Job([Rank()], extra=extra).record(900))
    check_shape(findings)
    assert keys(findings) == [key] and findings[0].severity == severity


def test_healthy_data_integrity_counters_are_silent():
    extra = [
        _counters("prepwatch_input_contract_violations_total", "kind", {"bgr": 0.0}),
        lambda j, t: [f'prepwatch_input_batches_checked_total{{run="job",rank="0"}} {t - 1.8e9}'],
        _counters("prepwatch_box_alignment_checks_total", "result", {"aligned": 1.0, "misaligned": 0.01}),
        _counters("prepwatch_clips_total", "outcome", {"consistent": 1.0, "inconsistent": 0.05}),
    ]
    assert diagnose(Job([Rank()], extra=extra).record(900)) == []


@pytest.mark.slow
def test_rare_class_recall_falling_under_augmentation_on_the_real_overaug_run():
    """The overaug demo's deterministic run (as in test_class_health_demo), scraped at each
    evaluation: the engine names the rare class once the augmentation ramps up."""
    from helpers import scrape

    import prepwatch
    from prepwatch.demo import fault_overaug
    from prepwatch.diagnosis.series import Snapshot, Window, labels_of

    prepwatch.stop()
    watch = prepwatch.start(run="overaug", port=0, sources=False)
    snaps: list[Snapshot] = []
    try:
        fault_overaug.run(
            watch,
            steps=450,
            seed=0,
            eval_size=1200,
            eval_every_steps=30,
            ramp_after_steps=150,
            on_evaluation=lambda e: snaps.append(
                Snapshot(
                    60.0 * (len(snaps) + 1),
                    {(n, labels_of(dict(lab))): v for (n, lab), v in scrape(watch.url).items()},
                )
            ),
        )
    finally:
        prepwatch.stop()
    early = diagnose(Window(snaps[:5], start=0.0))
    assert "rare_recall" not in keys(early)
    findings = diagnose(Window(snaps, start=0.0))
    check_shape(findings)
    rare = [f for f in findings if f.key == "rare_recall"]
    assert (
        rare
        and rare[0].scope["class"] == fault_overaug.CLASS_NAMES[fault_overaug.RARE]
        and rare[0].scope["split"] == "eval"
    )
    assert rare[0].evidence[0].value > 0.10 and not math.isnan(rare[0].evidence[0].value)
