"""The over-augmentation demo reproduces, and the real alert rules fire on what it exported.

``fault_overaug.run`` trains the real model (a shorter, step-scheduled, seeded variant of
``prepwatch demo --fault overaug``). After every evaluation the test takes what a scrape
would return, then feeds those scrapes, one per minute, to promtool with the real rule
file: the alert must be quiet before the augmentation ramp and firing at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from helpers import parse
from prometheus_client import generate_latest

from prepwatch.context import Context
from prepwatch.demo import fault_overaug
from prepwatch.demo.extra_classes import CLASS_NAMES, Extra
from prepwatch.identity import Identity
from prepwatch.metrics.registry import LabelledView
from prepwatch.watch import Watch

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "class_health.rules.yml"
RARE = fault_overaug.CLASS_NAMES[fault_overaug.RARE]
ALERT_INPUTS = (
    "prepwatch_class_recall_ratio", "prepwatch_class_recall_previous_ratio",
    "prepwatch_accuracy_ratio", "prepwatch_accuracy_previous_ratio",
    "prepwatch_eval_rounds_total", "prepwatch_class_samples_total", "prepwatch_class_rare",
    "prepwatch_class_recent_samples", "prepwatch_class_recent_correct", "prepwatch_eval_recent_passes",
)


def new_watch(run: str) -> Watch:
    return Watch(Context.create(identity=Identity(run=run)), exporter=None, artifacts_dir=None)


def scrape(watch: Watch) -> dict:
    view = LabelledView(watch.ctx.registry, watch.ctx.identity.labels)
    return parse(generate_latest(view).decode())


def pick(samples: dict, metric: str, /, **labels: str) -> float | None:
    for (n, lab), v in samples.items():
        d = dict(lab)
        if n == metric and all(d.get(k) == val for k, val in labels.items()):
            return v
    return None


def expected_annotations(drop: float) -> dict[str, str]:
    """The alert's annotations, rendered the way Prometheus' templates would."""
    rule = next(
        r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
        if r.get("alert") == "PrepwatchRareClassRecallDrop"
    )
    out = {}
    for key, text in rule["annotations"].items():
        text = text.replace("{{ $labels.run }}", "overaug").replace("{{ $labels.split }}", "eval")
        text = text.replace("{{ $labels.class }}", RARE)
        out[key] = text.replace("{{ $value | humanizePercentage }}", f"{drop * 100:.4g}%")
    return out


def promtool_test(scrapes: list[dict], quiet_at: int, firing_at: int, drop: float, tmp_path: Path) -> str:
    """A promtool unit test: scrape i is the input at minute i."""
    series: dict[tuple, list[str]] = {}
    for i, samples in enumerate(scrapes):
        for (name, labels), v in samples.items():
            if name in ALERT_INPUTS:
                series.setdefault((name, labels), ["_"] * len(scrapes))[i] = repr(float(v))
    lines = []
    for (name, labels), values in sorted(series.items()):
        all_labels = dict(labels, job="prepwatch", instance="demo:9400")
        text = ",".join(f'{k}="{v}"' for k, v in sorted(all_labels.items()))
        lines.append(f"      - series: '{name}{{{text}}}'\n        values: '{' '.join(values)}'")
    test = textwrap.dedent(f"""\
        rule_files:
          - {RULES}
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
        """) + "\n".join(lines) + textwrap.indent(textwrap.dedent(f"""
        alert_rule_test:
          - eval_time: {quiet_at}m
            alertname: PrepwatchRareClassRecallDrop
            exp_alerts: []
          - eval_time: {firing_at}m
            alertname: PrepwatchRareClassRecallDrop
            exp_alerts:
              - exp_labels:
                  severity: warning
                  job: prepwatch
                  run: overaug
                  split: eval
                  class: {RARE}
                exp_annotations: {json.dumps(expected_annotations(drop))}
        """), "    ")
    path = tmp_path / "overaug.test.yml"
    path.write_text(test)
    return str(path)


@pytest.mark.slow
def test_overaug_demo_reproduces_and_the_alert_fires(tmp_path):
    watch = new_watch("overaug")
    scrapes: list[dict] = []
    result = fault_overaug.run(
        watch, steps=450, seed=0, eval_size=1200, eval_every_steps=30, ramp_after_steps=150,
        on_evaluation=lambda e: scrapes.append(scrape(watch)),
    )
    evals = result.evaluations
    assert len(evals) == len(scrapes) == 15

    # the rare class is found from the label frequency alone (4% < half of 10%)
    rare = {dict(lab)["class"]: v for (n, lab), v in scrapes[-1].items() if n == "prepwatch_class_rare"}
    assert rare == {name: float(name == RARE) for name in fault_overaug.CLASS_NAMES}

    # the model learned the rare class before the ramp, then lost it on clean data
    before = [e for e in evals if e.strength == 0]
    peak = max(before, key=lambda e: e.rare_recall)
    assert peak.rare_recall >= 0.9
    assert max(e.rare_recall for e in evals[-2:]) <= peak.rare_recall - 0.5
    # while overall clean accuracy kept rising
    assert evals[-1].accuracy >= peak.accuracy + 0.05
    assert max(e.accuracy for e in evals[-2:]) >= max(e.accuracy for e in evals) - 0.02
    assert evals[-1].strength == 1.0
    assert pick(scrapes[-1], "prepwatch_augmentation_param", name="cutout_holes_per_image") == 2.0
    assert result.alert_condition()
    # the exported gauges are the numbers the test read
    assert pick(scrapes[-1], "prepwatch_class_recall_ratio", split="eval", **{"class": RARE}) == (
        pytest.approx(evals[-1].rare_recall))

    # the real alert rules on those scrapes: quiet at the peak, firing at the end
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    def pooled(samples: dict) -> float | None:
        if (pick(samples, "prepwatch_eval_recent_passes", split="eval") or 0) < 2:
            return None
        n = pick(samples, "prepwatch_class_recent_samples", split="eval", **{"class": RARE})
        k = pick(samples, "prepwatch_class_recent_correct", split="eval", **{"class": RARE})
        return k / n if n else None

    pools = [p for p in map(pooled, scrapes) if p is not None]
    drop = max(pools) - pools[-1]
    # a scrape a minute after the last pass shows the same numbers (for: 1m)
    scrapes.append(scrapes[-1])
    path = promtool_test(scrapes, evals.index(peak), len(scrapes) - 1, drop, tmp_path)
    res = subprocess.run([promtool, "test", "rules", path], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_overaug_main_runs_on_the_clock(capsys):
    """The entry point `prepwatch demo --fault overaug` calls, for a few seconds."""
    watch = new_watch("overaug")
    fault_overaug.main(watch, argparse.Namespace(seconds=4.0, workers=0, seed=0))
    out = capsys.readouterr().out
    assert "overaug:" in out and len(out.strip().splitlines()) <= 3
    assert pick(scrape(watch), "prepwatch_eval_rounds_total", split="eval") >= 1


def test_extra_feeds_both_splits_and_reports_the_demo_augmentation():
    watch = new_watch("demo")
    extra = Extra(watch, argparse.Namespace(seconds=60, workers=0, seed=0))
    gen = torch.Generator().manual_seed(0)
    for step in range(40):
        labels = torch.randint(0, 10, (64,), generator=gen)
        extra.on_train_step(step, torch.zeros(64, 3, 32, 32), labels, torch.randn(64, 10, generator=gen))
        if step % 10 == 9:
            for _ in range(2):
                labels = torch.randint(0, 10, (128,), generator=gen)
                extra.on_eval(torch.zeros(128, 3, 32, 32), labels, torch.randn(128, 10, generator=gen))
    extra.close()
    got = scrape(watch)
    assert pick(got, "prepwatch_eval_rounds_total", split="eval") == 4
    assert pick(got, "prepwatch_augmentation_param", name="hflip_p") == 0.5
    for split in ("train", "eval"):
        recall = {dict(lab)["class"] for (n, lab), _ in got.items()
                  if n == "prepwatch_class_recall_ratio" and dict(lab)["split"] == split}
        assert recall == set(CLASS_NAMES)
    assert {dict(lab)["class"]: v for (n, lab), v in got.items() if n == "prepwatch_class_rare"} == {
        name: 0.0 for name in CLASS_NAMES}  # balanced labels: no rare class
