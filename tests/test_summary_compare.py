"""End-of-run summary (watch.stop) on a real loop with real workers, and `prepwatch compare`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from diagnosis_series import Job, Rank
from torch.utils.data import DataLoader, Dataset

import prepwatch
from prepwatch.summary.build import build_summary, write_summary

ROOT = Path(__file__).resolve().parents[1]


class Squares(Dataset):
    def __len__(self) -> int:
        return 256

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.full((8,), float(i))


def test_watch_stop_writes_summary_json_and_prints_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PREPWATCH_SUMMARY", raising=False)
    prepwatch.stop()
    watch = prepwatch.start(run="sumtest", port=0, sources=False, state_dir=tmp_path)
    loader = DataLoader(Squares(), batch_size=16, num_workers=2)
    batches = sum(1 for _ in watch.loader(loader))
    from helpers import scrape, value

    steps = value(scrape(watch.url), "prepwatch_step_duration_seconds_count")
    prepwatch.stop()
    err = capsys.readouterr().err
    path = tmp_path / "sumtest" / "rank0" / "summary.json"
    data = json.loads(path.read_text())
    assert data["schema"] == "prepwatch.summary/1" and data["run"] == "sumtest"
    assert batches == 16 and data["steps"] == steps >= 15
    (rank,) = data["ranks"]
    assert rank["rank"] == "0" and rank["samples"] == 256 and 0 <= rank["wait_share"] <= 1
    assert rank["step_p50"] > 0 and rank["step_p99"] >= rank["step_p50"]
    assert data["duration_s"] > 0 and isinstance(data["findings"], list)
    assert "prepwatch summary: run 'sumtest'" in err and str(path) in err


def test_no_summary_without_a_loop_or_when_turned_off(tmp_path, capsys, monkeypatch):
    prepwatch.stop()
    prepwatch.start(run="noloop", port=0, sources=False, state_dir=tmp_path)
    prepwatch.stop()
    monkeypatch.setenv("PREPWATCH_SUMMARY", "0")
    watch = prepwatch.start(run="off", port=0, sources=False, state_dir=tmp_path)
    list(watch.loader([torch.zeros(2)] * 3))
    prepwatch.stop()
    assert "prepwatch summary" not in capsys.readouterr().err
    assert not list(tmp_path.rglob("summary.json"))


def summary_of(job: Job, seconds: float, path: Path) -> Path:
    return write_summary(build_summary(job.record(seconds), "job"), path)


def compare(a: Path, b: Path) -> dict:
    res = subprocess.run(
        [sys.executable, "-m", "prepwatch.cli.main", "compare", str(a), str(b), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_compare_same_behaviour_is_within_noise(tmp_path):
    a = summary_of(Job([Rank(step_s=0.100)]), 600, tmp_path / "a.json")
    b = summary_of(Job([Rank(step_s=0.102)]), 600, tmp_path / "b.json")  # 2%: run-to-run noise
    result = compare(a, b)
    assert result["verdict"] == "no change beyond run-to-run noise"
    assert all(not c["significant"] for c in result["changes"])


def test_compare_names_a_regression_and_a_new_finding(tmp_path):
    a = summary_of(Job([Rank(step_s=0.1, wait_share=0.02)]), 600, tmp_path / "a.json")
    b = summary_of(Job([Rank(step_s=0.2, wait_share=0.30)]), 600, tmp_path / "b.json")
    result = compare(a, b)
    worse = {c["metric"] for c in result["changes"] if c["direction"] == "worse"}
    assert {"samples/s", "rank 0 data-wait share", "rank 0 step p50"} <= worse
    assert [f["key"] for f in result["findings"]["new"]][0].startswith("input_bound.")
    back = compare(b, a)
    assert back["findings"]["resolved"] and not back["findings"]["new"]
    text = subprocess.run(
        [sys.executable, "-m", "prepwatch.cli.main", "compare", str(a), str(b)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    ).stdout
    assert "WORSE" in text and "finding new:" in text


def test_compare_rejects_a_file_that_is_not_a_summary(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    res = subprocess.run(
        [sys.executable, "-m", "prepwatch.cli.main", "compare", str(bad), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert res.returncode == 2 and "not a prepwatch summary.json" in res.stderr
