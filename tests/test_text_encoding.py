"""Our fast text encoder must parse to exactly what prometheus_client renders."""

import math

import torch
from helpers import parse
from prometheus_client import generate_latest

from prepwatch.checks.class_health.monitor import ClassHealth
from prepwatch.context import Context
from prepwatch.exporter.text import encode_text
from prepwatch.metrics import STEP_BUCKETS
from prepwatch.metrics.registry import LabelledView


def _equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert (math.isnan(a[key]) and math.isnan(b[key])) or math.isclose(a[key], b[key], rel_tol=1e-12), key


def test_same_samples_as_prometheus_client_with_identity_labels():
    ctx = Context.create()
    reg = ctx.registry
    h = reg.histogram("x_seconds", "a \\ doc\nwith newline", ["stage"], buckets=STEP_BUCKETS)
    h.labels('we"ird\\va\nlue').observe(0.02)
    h.labels("plain").observe(7.0)
    reg.counter("y_total", "c").labels().inc(1e20)
    g = reg.gauge("z_ratio", "g", ["k"])
    g.labels("a").set(float("inf"))
    g.labels("b").set(-0.000123456789)
    g.labels("run").set(3)  # a sample whose own label collides with an identity label name
    reg.gauge("clash", "own run label wins", ["run"]).labels("mine").set(1)
    ch = ClassHealth(ctx, num_classes=50)
    ch.train_predictions(torch.randint(0, 50, (256,)), torch.randint(0, 50, (256,)))
    ch.flush()
    identity = {"run": "job-1", "rank": "2"}
    ours = parse(encode_text(reg, identity).decode())
    reference = parse(generate_latest(LabelledView(reg, identity)).decode())
    reference = {k: v for k, v in reference.items() if not k[0].endswith("_created")}
    _equal(ours, reference)
    assert ("clash", (("rank", "2"), ("run", "mine"))) in ours
