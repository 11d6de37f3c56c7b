"""`prepwatch demo --fault boxes` shows the misalignment; the healthy extra shows none."""

from __future__ import annotations

import argparse
import urllib.request

import torch
from helpers import scrape, value, wait_for

from prepwatch.demo import fault_boxes
from prepwatch.demo.extra_geometry import Extra


def test_fault_boxes_is_caught_by_the_probe_and_drawn(watch, capsys) -> None:
    torch.set_num_threads(1)
    fault_boxes.main(watch, argparse.Namespace(seconds=4.0, workers=2, seed=0))
    out = capsys.readouterr().out
    assert 1 <= len(out.strip().splitlines()) <= 3, out
    assert "misaligned" in out
    s = scrape(watch.url)
    misaligned = value(s, "prepwatch_box_alignment_checks_total", result="misaligned")
    aligned = value(s, "prepwatch_box_alignment_checks_total", result="aligned")
    # Three quarter turns in four move the box off its square (flips alone are fine).
    assert misaligned >= 0.5 * (misaligned + aligned) and misaligned >= 10
    assert value(s, "prepwatch_box_misalignments_total", kind="iou") > 0
    assert value(s, "prepwatch_boxes_total", outcome="kept") > 0
    # The overlay is written (by a background thread: poll, a loaded machine may take a
    # while) and served read-only by the process' endpoint.
    s = wait_for(lambda: (s := scrape(watch.url)) and (value(s, "prepwatch_box_overlays_total") or 0) >= 1
                 and s, timeout=60)
    path = next(dict(labels)["path"] for (name, labels) in s if name == "prepwatch_box_overlay_info")
    base = watch.url.rsplit("/metrics", 1)[0]
    with urllib.request.urlopen(base + path, timeout=5) as resp:
        assert resp.status == 200 and resp.read(8) == b"\x89PNG\r\n\x1a\n"


def test_healthy_extra_feeds_every_series_with_no_alarm(watch) -> None:
    torch.set_num_threads(1)
    extra = Extra(watch, argparse.Namespace(seed=0))
    images, labels, logits = torch.randn(8, 3, 32, 32), torch.zeros(8, dtype=torch.long), torch.zeros(8, 10)
    extra.boxes.probe_budget = 1.0  # no wall-time spacing in a loop with no training work
    extra.clips.budget = 1.0
    for step in range(220):
        extra.on_train_step(step, images, labels, logits)
        # clips are measured on a background thread that skips new clips while busy; a
        # loop with no training work would outrun it, so wait for each measurement
        extra.clips.flush()
    extra.on_eval(images, labels, logits)
    extra.close()
    s = scrape(watch.url)
    # 22 observed batches: probes at the 5th, 10th, 15th, 20th, 2 trials each. Crops drop
    # some painted boxes (inconclusive); none may come out misaligned.
    results = {r: value(s, "prepwatch_box_alignment_checks_total", result=r)
               for r in ("aligned", "misaligned", "inconclusive")}
    assert sum(results.values()) == 8 and results["misaligned"] == 0
    assert results["aligned"] >= 2
    assert value(s, "prepwatch_boxes_total", outcome="kept") > 0
    assert value(s, "prepwatch_boxes_total", outcome="out_of_bounds") == 0
    assert value(s, "prepwatch_clips_total", outcome="consistent", source="stream") >= 4
    assert value(s, "prepwatch_clips_total", outcome="consistent", source="probe") >= 1
    assert value(s, "prepwatch_clips_total", outcome="inconsistent") == 0
    assert value(s, "prepwatch_box_overlays_total") >= 1
    assert value(s, "prepwatch_internal_errors_total", component="boxes") == 0
    assert value(s, "prepwatch_internal_errors_total", component="clips") == 0
