"""End to end: a starved demo pages through the real rules, Alertmanager and a webhook.

The fault is real (the demo's workers read and decode slowly), the rules are the
repository's with shortened windows (conftest.E2E_WINDOWS), the routing and inhibition
are deploy/alertmanager/alertmanager.yml's. The seconds from fault onset (the demo's
start) to the webhook are printed and recorded as the junit property
``fault_to_webhook_seconds``.
"""

from __future__ import annotations

import re
import time

import pytest
from e2e_stack import Stack, input_pipeline_alerts, running_stack, wait_until
from runbook_links import runbook_problem

pytestmark = pytest.mark.e2e

STARVATION_DEMO_S = 120  # upper bound; the demo is stopped as soon as the alert arrived
WEBHOOK_TIMEOUT_S = 90.0


def _delivered(stack: Stack, name: str) -> list[tuple[float, dict]]:
    return [
        (t, a) for t, a in stack.webhook.alerts()
        if a["labels"].get("alertname") == name and a.get("status") == "firing"
    ]


def test_starvation_alert_reaches_the_webhook(tmp_path, demo_help, record_property, capsys):
    demo = ["--seconds", str(STARVATION_DEMO_S), "--fault", "starvation"]
    with running_stack(tmp_path, demo) as stack:
        onset = stack.demo.started_at
        try:
            wait_until(lambda: bool(_delivered(stack, "PrepwatchInputBoundCritical")),
                       WEBHOOK_TIMEOUT_S, "PrepwatchInputBoundCritical at the webhook")
        except TimeoutError:
            share = stack.query("run_rank:prepwatch_data_wait_seconds:ratio_rate5m")
            pytest.fail(f"no alert at the webhook; wait share {share}\n{stack.diagnostics()}")
        received, alert = _delivered(stack, "PrepwatchInputBoundCritical")[0]
        delivered_warnings = _delivered(stack, "PrepwatchInputBoundWarning")

    latency = received - onset
    record_property("fault_to_webhook_seconds", round(latency, 1))
    with capsys.disabled():
        print(f"\n[e2e] starvation: fault onset (demo start) -> webhook: {latency:.1f} s")

    labels, ann = alert["labels"], alert["annotations"]
    assert labels["run"] == "demo" and labels["rank"] == "0"
    assert labels["severity"] == "critical"
    assert labels["job"] == "prepwatch"
    assert runbook_problem(ann["runbook_url"]) is None
    m = re.search(r"waits for the next batch ([\d.]+)% of its step time", ann["description"])
    assert m, ann["description"]
    assert float(m.group(1)) > 20.0, "the critical tier fired below its threshold"
    assert latency < WEBHOOK_TIMEOUT_S
    # Inhibition (deploy/alertmanager/alertmanager.yml): once the critical tier was
    # delivered, the warning tier for the same rank is not.
    assert all(t <= received for t, _ in delivered_warnings), (
        "PrepwatchInputBoundWarning was delivered while PrepwatchInputBoundCritical fired"
    )


def test_healthy_demo_raises_nothing(healthy_stack: Stack, capsys) -> None:
    names = input_pipeline_alerts()
    firing = healthy_stack.firing(names)
    share = healthy_stack.query("run_rank:prepwatch_data_wait_seconds:ratio_rate5m")
    spread = healthy_stack.query(
        "run_rank:prepwatch_step_duration_seconds:p99_rate10m"
        " / run_rank:prepwatch_step_duration_seconds:p50_rate10m"
    )
    detail = (
        f"data-wait share {[s['value'][1] for s in share]}, "
        f"step p99/p50 {[s['value'][1] for s in spread]}"
    )
    with capsys.disabled():
        print(f"\n[e2e] healthy demo: {detail}")
    assert share, "the healthy demo produced no data-wait share: the stack saw no steps"
    assert not firing, f"input-pipeline alerts firing on the healthy demo: {firing}; {detail}"
    time.sleep(2)  # anything Prometheus sent has passed group_wait
    delivered = [
        f"{a['labels']['alertname']} ({a.get('status')}): {a['annotations'].get('description')}"
        for _, a in healthy_stack.webhook.alerts() if a["labels"].get("alertname") in names
    ]
    assert not delivered, f"the healthy demo paged: {delivered}; {detail}"
