"""The single-writer instruments must expose exactly what prometheus_client would."""

import math
import random

from helpers import parse
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from prepwatch.context import Context
from prepwatch.metrics import STEP_BUCKETS, WAIT_BUCKETS, geometric_buckets


def test_histogram_matches_prometheus_client():
    ref_registry = CollectorRegistry()
    ref = Histogram("x_seconds", "x", registry=ref_registry, buckets=STEP_BUCKETS)
    ctx = Context.create()
    mine = ctx.registry.histogram("x_seconds", "x", buckets=STEP_BUCKETS).labels()
    rng = random.Random(1)
    for _ in range(5000):
        v = 10 ** rng.uniform(-4, 2.2)
        ref.observe(v)
        mine.observe(v)
    for edge in STEP_BUCKETS[:5]:  # values exactly on an edge fall in that bucket (le is inclusive)
        ref.observe(edge)
        mine.observe(edge)
    expected = {k: v for k, v in parse(generate_latest(ref_registry).decode()).items()
                if not k[0].endswith("_created")}
    got = parse(generate_latest(ctx.registry).decode())
    got = {k: v for k, v in got.items() if k[0].startswith("x_seconds")}
    assert expected.keys() == got.keys()
    for key in expected:
        assert math.isclose(expected[key], got[key], rel_tol=1e-9), key


def test_buckets_cover_1ms_to_60s_with_bounded_spacing():
    assert STEP_BUCKETS[0] <= 0.001 and STEP_BUCKETS[-1] >= 60
    ratios = [b / a for a, b in zip(STEP_BUCKETS, STEP_BUCKETS[1:])]
    assert max(ratios) < 1.6  # quantile interpolation error stays bounded
    assert WAIT_BUCKETS[0] <= 1e-5
    assert geometric_buckets(1, 8, 2) == (1.0, 2.0, 4.0, 8.0)


def test_gauge_nan_is_omitted_and_function_gauges_are_read_at_scrape():
    ctx = Context.create()
    g = ctx.registry.gauge("g_ratio", "g", ["k"])
    g.labels("unknown").set(float("nan"))
    box = {"v": 1.0}
    g.labels("live").set_function(lambda: box["v"])
    box["v"] = 0.25
    got = parse(generate_latest(ctx.registry).decode())
    assert got == {("g_ratio", (("k", "live"),)): 0.25} | {
        k: v for k, v in got.items() if k[0] != "g_ratio"
    }


def test_failing_collector_is_counted_not_raised():
    ctx = Context.create()

    class Broken:
        def collect(self):
            raise RuntimeError("boom")

    ctx.registry.register(Broken(), "broken")
    got = parse(generate_latest(ctx.registry).decode())
    assert got[("prepwatch_internal_errors_total", (("component", "broken"),))] == 1


def test_counter_names_must_end_in_total():
    ctx = Context.create()
    try:
        ctx.registry.counter("prepwatch_things", "x")
    except ValueError as exc:
        assert "_total" in str(exc)
    else:
        raise AssertionError("expected ValueError")
