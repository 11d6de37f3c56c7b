"""The real demo's input faults are named in `prepwatch top`, summary.json and the report;
the healthy demo gets no finding in any of them. (Demos are short: ~20-40 s each.)"""

from __future__ import annotations

import pytest
from verdict_demo import run_demo

pytestmark = pytest.mark.slow


def test_healthy_demo_has_no_finding_anywhere(tmp_path):
    got = run_demo(tmp_path, None, 25, "healthy")
    assert got["top"] == "healthy", got
    assert got["summary"] == got["report"] == "healthy", got["stderr"][-2000:]
    assert "verdict: healthy, no finding" in got["stderr"]
    rank = got["data"]["ranks"][0]
    assert rank["steps"] > 0 and rank["wait_share"] < 0.10 and rank["step_p50"] > 0


def test_starvation_demo_is_input_bound_everywhere(tmp_path):
    got = run_demo(tmp_path, "starvation", 30, "input_bound")
    for where in ("top", "summary", "report"):
        assert got[where].startswith("input_bound."), (where, got[where], got["stderr"][-2000:])
    finding = got["data"]["findings"][0]
    assert finding["severity"] in ("warning", "critical")
    assert any(e["what"].startswith("data-wait") and e["unit"] == "%" for e in finding["evidence"])
    assert "PrepwatchInputBoundWarning" in got["data"]["alerts_would_fire"]


def test_io_demo_names_the_small_file_storm_everywhere(tmp_path):
    # top judges a 3 s window: polled until it names the storm (a busy machine's first
    # windows may open too few files per second to call it a storm yet)
    named = ("storage.small_files", "input_bound.small_files")
    got = run_demo(tmp_path, "io", 30, named)
    for where in ("top", "summary", "report"):
        assert got[where] in named, (where, got)
    assert "PrepwatchSmallFileMetadataStorm" in got["data"]["alerts_would_fire"]
