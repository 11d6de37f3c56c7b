"""Fault injection with real processes: the job goes on, or ends exactly as it would alone."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import torch
from helpers import read_url, scrape, value, wait_for

JOBS = Path(__file__).parent / "jobs"


def test_a_killed_worker_ends_the_job_exactly_as_without_prepwatch():
    outs = {}
    for mode in ("bare", "wrapped"):
        out = subprocess.run([sys.executable, str(JOBS / "killable_worker.py"), mode],
                             capture_output=True, text=True, timeout=120)
        outs[mode] = out.stdout.strip().splitlines()[-1]
    assert outs["bare"] == outs["wrapped"] == "RuntimeError: True"


def test_empty_batches_and_nan_values_are_fine(watch):
    batches = [torch.empty(0, 3), torch.full((4, 3), float("nan")), torch.full((2, 3), float("inf"))]
    assert len(list(watch.loader(batches))) == 3
    s = scrape(watch.url)
    assert value(s, "prepwatch_samples_total") == 6
    assert value(s, "prepwatch_internal_errors_total") == 0


def test_state_dir_deleted_mid_run_the_job_goes_on(tmp_path):
    marker = tmp_path / "m"
    proc = subprocess.Popen(
        [sys.executable, "-m", "prepwatch.cli.main", "run", "--port", "0", "--", sys.executable,
         str(JOBS / "train_loop.py"), "--seconds", "60", "--marker", str(marker), "--workers", "1"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        url = read_url(proc.stderr)
        wait_for(lambda: (value(scrape(url), "prepwatch_steps_total") or 0) > 0, timeout=60)
        state = Path((tmp_path / "m.env").read_text())
        shutil.rmtree(state)
        s = scrape(url)  # the agent still answers; the rank is simply no longer reachable
        assert value(s, "prepwatch_build_info") == 1
        import time

        time.sleep(2)
        assert proc.poll() is None  # still training
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 7  # the job's own handler ran: it was alive and well
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        proc.stderr.close()


def test_a_hundred_thousand_distinct_classes_stay_bounded_on_the_endpoint(watch, caplog):
    health = watch.class_health(num_classes=100_000, max_classes=1000)
    for _ in range(20):
        labels = torch.randint(0, 100_000, (512,))
        watch.class_health().train_predictions(torch.randint(0, 100_000, (512,)), labels)
        watch.class_health().eval_predictions(torch.randint(0, 100_000, (512,)), labels)
    health.flush()
    s = scrape(watch.url)
    classes = {dict(k[1]).get("class") for k in s if k[0] == "prepwatch_class_samples_total"}
    assert len(classes) <= 1001  # the cap, plus the aggregate of the rest
    assert value(s, "prepwatch_class_samples_total", split="train") == 20 * 512  # nothing lost
    assert value(s, "prepwatch_internal_errors_total") == 0


def test_nan_and_inf_predictions_do_not_reach_the_loop(watch):
    logits = torch.full((8, 10), float("nan"))
    logits[1] = float("inf")
    watch.class_health().train_predictions(logits, torch.arange(8))
    watch.class_health().train_predictions(torch.empty(0, 10), torch.empty(0, dtype=torch.long))
    watch.class_health().flush()
    s = scrape(watch.url)
    assert value(s, "prepwatch_class_samples_total", split="train") == 8
