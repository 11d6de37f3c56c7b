"""The agent's process series per registered rank (issue 13 item 4): labelled with the
rank's run and rank, and gone with the rank (a node agent keeps no series of old jobs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from prepwatch.sources.rank_processes import RankProcessSampler, read_rank_identities


def _series(sampler: RankProcessSampler, name: str) -> dict[tuple[str, str, str], float]:
    return {(s.labels["run"], s.labels["rank"], s.labels["role"]): s.value
            for m in sampler.collect() for s in m.samples if s.name == name}


def test_series_per_rank_follow_the_registered_ranks() -> None:
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
                for _ in range(2)]
    try:
        ranks = {sleepers[0].pid: {"run": "my-cnn", "rank": "0"},
                 sleepers[1].pid: {"run": "other", "rank": "3"}}
        sampler = RankProcessSampler(lambda: dict(ranks))
        sampler.sample()
        counts = _series(sampler, "prepwatch_processes")
        assert counts[("my-cnn", "0", "main")] == 1 and counts[("other", "3", "main")] == 1
        assert counts[("my-cnn", "0", "workers")] == 0
        assert sampler.job_pids() == {p.pid for p in sleepers}
        del ranks[sleepers[1].pid]  # unregistered (or died): its series go with it
        sampler.sample()
        assert {k[:2] for k in _series(sampler, "prepwatch_process_cpu_seconds_total")} == {("my-cnn", "0")}
    finally:
        for p in sleepers:
            p.kill()
            p.wait()


def test_rank_identities_are_read_from_the_registration_files(tmp_path: Path) -> None:
    (tmp_path / "123.sock").touch()
    (tmp_path / "123.json").write_text(json.dumps({"run": "my cnn\n", "rank": 2}))
    (tmp_path / "456.sock").touch()  # identity not written yet: skipped this tick
    (tmp_path / "x.sock").touch()
    (tmp_path / "x.json").write_text(json.dumps({"run": "a", "rank": 0}))  # not a pid
    found = read_rank_identities(tmp_path)
    assert list(found) == [123] and found[123]["rank"] == "2"
    assert "\n" not in found[123]["run"]  # a label value, sanitized
