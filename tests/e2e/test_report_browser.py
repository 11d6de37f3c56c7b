"""`prepwatch report` from a real Prometheus, opened in a real headless Chromium.

The starved demo (every extra on) is scraped by Prometheus with the shipped rules
(windows shortened, see e2e_stack); the report must name the input-bound finding, list
the alerts that fired, draw every panel whose query has data, and load in Chromium with
no console error. PREPWATCH_KEEP_SCREENSHOT=PATH keeps the screenshot (docs/ uses one).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from e2e_stack import ROOT, running_stack, wait_until
from helpers import require_binary

from prepwatch.report.panels import load_panels

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
# panels that need hardware or DDP ranks the demo does not have (a GPU; watch.ddp)
NOT_IN_DEMO = re.compile(r"prepwatch_gpu_|prepwatch_collective_")
EMPTY = re.compile(r'data-panel="([^"]*)" data-drawn="0" data-series="0"')


def chromium(html, png, tmp_path) -> str:
    exe = require_binary("chromium")
    res = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--hide-scrollbars",
            "--window-size=1280,2400",
            f"--screenshot={png}",
            "--enable-logging=stderr",
            "--v=0",
            f"file://{html}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stderr


def make_report(prometheus_url: str, html) -> str:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "prepwatch.cli.main",
            "report",
            "--prometheus",
            prometheus_url,
            "--run",
            "demo",
            "--since",
            "10m",
            "--rate-interval",
            "15s",
            "-o",
            str(html),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert res.returncode == 0, res.stderr
    return html.read_text()


def test_report_from_prometheus_names_the_fault_and_draws_every_panel(tmp_path):
    panels = [p for _, ps in load_panels() for p in ps]
    gpu_only = {p.title for p in panels if all(NOT_IN_DEMO.search(e) for _, e, _ in p.targets)}
    html = tmp_path / "report.html"
    with running_stack(tmp_path, ["--seconds", "0", "--fault", "starvation"]) as stack:
        # Warning or critical: how far past 20% the wait share gets depends on the host's load.
        fired = 'ALERTS{alertname=~"PrepwatchInputBound.*", alertstate="firing"}'
        wait_until(lambda: bool(stack.query(fired)), 150, "an input-bound alert")
        names = {a["metric"]["alertname"] for a in stack.query(fired)}
        deadline = time.monotonic() + 240
        while True:  # the extras' first evaluations and served batches take a while
            page = make_report(stack.prometheus_url, html)
            # No series at all fails; all-NaN series had nothing to measure (their divisor
            # did not move), as in test_dashboard_queries.
            empty = sorted(t for t in EMPTY.findall(page) if t not in gpu_only)
            if not empty or time.monotonic() > deadline:
                break
            assert stack.demo.alive(), stack.diagnostics()
            time.sleep(5)
        prom_url = stack.prometheus_url
    assert not empty, f"panels without any series: {empty}"
    assert "<script" not in page and "http://" not in page.replace(prom_url, "")
    first = re.search(r'data-finding="([^"]*)"', page).group(1)
    assert first.startswith("input_bound."), first
    assert all(f'data-alert="{name}"' in page for name in names), names
    assert len(re.findall(r'data-panel="', page)) == len(panels)
    nan_only = len(re.findall(r'data-drawn="0" data-series="[1-9]', page))
    drawn = [n for n in re.findall(r'data-drawn="(\d+)"', page) if n != "0"]
    assert len(drawn) == len(panels) - len(gpu_only) - nan_only
    assert page.count('<path d="M') >= len(drawn)
    print(
        f"\n[report] {len(panels)} panels: {len(drawn)} drawn, {len(gpu_only)} GPU/DDP-only, "
        f"{nan_only} all-NaN"
    )

    png = tmp_path / "report.png"
    log = chromium(html, png, tmp_path)
    errors = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not errors, errors
    assert png.stat().st_size > 20_000
    keep = os.environ.get("PREPWATCH_KEEP_SCREENSHOT")
    if keep:
        shutil.copyfile(png, keep)
        shutil.copyfile(html, keep + ".html")
