"""Pooled counts of the last evaluation passes (what the rare-class alert tests), and the
simulation that chose that test over the single-pass one."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from helpers import parse
from prometheus_client import generate_latest

from prepwatch.checks.class_health.monitor import ClassHealth
from prepwatch.checks.class_health.stats import recent_pool
from prepwatch.context import Context

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import sim_rare_class_alert as sim  # noqa: E402

torch.set_num_threads(1)


def _by(samples: dict, name: str, key: str) -> dict[str, float]:
    return {dict(lab)[key]: v for (n, lab), v in samples.items() if n == name}


def test_recent_pool_follows_the_cadence() -> None:
    assert [recent_pool(k) for k in (0, 1, 2, 4, 5, 6, 8, 24, 72)] == [2, 2, 2, 2, 2, 3, 4, 4, 4]


def test_recent_counts_pool_the_last_passes_for_rare_classes_only() -> None:
    ctx = Context.create()
    ch = ClassHealth(ctx, num_classes=3, rare_classes=[2], rare_share=None)
    t = torch.tensor([0, 1, 2, 2, 2, 2])
    hits = [4, 3, 2, 1, 0, 4, 4, 4, 4]  # correct predictions of class 2 (of 4) per pass
    for h in hits:
        pred = torch.tensor([0, 1] + [2] * h + [0] * (4 - h))
        with ch.evaluation():
            ch.eval_predictions(torch.nn.functional.one_hot(pred, 3).float(), t)
    got = parse(generate_latest(ctx.registry).decode())
    # 9 passes within 6 h: L = 4, the last four passes pooled
    assert _by(got, "prepwatch_eval_recent_passes", "split") == {"eval": 4.0}
    assert _by(got, "prepwatch_class_recent_samples", "class") == {"2": 16.0}
    assert _by(got, "prepwatch_class_recent_correct", "class") == {"2": float(sum(hits[-4:]))}


def test_the_pooled_test_detects_more_at_the_same_false_alarm_rate() -> None:
    result = sim.run(ns=(20, 100), drops=(0.2,), cadences=(2, 24), classes=600, seed=1)
    old, chosen = result["tests"][0], sim.best_test(result)
    assert chosen != old
    assert sim.pool_size(sim.TESTS[-1], 2) == 2 and sim.pool_size(sim.TESTS[-1], 24) == 4

    def mean(name: str) -> float:
        v = [p for (t, *_), p in result["power"].items() if t == name]
        return sum(v) / len(v)

    assert mean(chosen) > mean(old) + 0.1
    for (name, *_), fa in result["fa"].items():
        if name == chosen:
            assert fa <= 2 * sim.FA_TARGET  # calibrated on this grid; sampling noise aside
