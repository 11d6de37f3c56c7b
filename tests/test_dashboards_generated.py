"""dashboards/*.json are exactly what dashboards/src produces, and the check can tell.

The generator runs as a user runs it (``python -m dashboards.src``, a real subprocess in
the checkout); hand edits, missing files and stale files are planted in a copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from runbook_links import ROOT

# One name per capability: the file (and uid prepwatch-<name>) of each dashboard.
CAPABILITIES = {"input-pipeline", "class-health", "inputs", "boxes", "clips"}


def _generator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dashboards.src", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_committed_json_is_what_the_source_produces() -> None:
    res = _generator("--check")
    assert res.returncode == 0, (
        res.stderr + "\nregenerate with: python -m dashboards.src (edit dashboards/src, not the JSON)"
    )


def test_one_dashboard_per_capability() -> None:
    files = {p.stem for p in (ROOT / "dashboards").glob("*.json")}
    assert files == CAPABILITIES
    for name in files:
        dash = json.loads((ROOT / "dashboards" / f"{name}.json").read_text(encoding="utf-8"))
        assert dash["uid"] == f"prepwatch-{name}"
        assert dash["title"].startswith("prepwatch / ")


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    for path in (ROOT / "dashboards").glob("*.json"):
        shutil.copyfile(path, tmp_path / path.name)
    return tmp_path


def test_check_fails_on_a_hand_edit_a_missing_and_a_stale_file(copy: Path) -> None:
    assert _generator("--check", "--out", str(copy)).returncode == 0
    edited = copy / "boxes.json"
    dash = json.loads(edited.read_text(encoding="utf-8"))
    dash["panels"][1]["fieldConfig"]["defaults"]["unit"] = "ms"
    edited.write_text(json.dumps(dash, indent=2) + "\n", encoding="utf-8")
    (copy / "clips.json").unlink()
    (copy / "data-integrity-geometry.json").write_text("{}", encoding="utf-8")
    res = _generator("--check", "--out", str(copy))
    assert res.returncode == 1
    for name in ("boxes.json", "clips.json", "data-integrity-geometry.json"):
        assert name in res.stderr, res.stderr
    assert "inputs.json" not in res.stderr
    # writing repairs all three: the edit is overwritten, the missing file written, the stale one removed
    res = _generator("--out", str(copy))
    assert res.returncode == 0, res.stderr
    assert not (copy / "data-integrity-geometry.json").exists()
    assert {p.stem for p in copy.glob("*.json")} == CAPABILITIES
    assert _generator("--check", "--out", str(copy)).returncode == 0
    for path in copy.glob("*.json"):
        assert path.read_bytes() == (ROOT / "dashboards" / path.name).read_bytes()


def test_conventions_are_enforced_by_the_source() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from dashboards.src import grafana as g
    finally:
        sys.path.remove(str(ROOT))
    with pytest.raises(ValueError, match="unit"):
        g.stat("No unit", "", "a description", [g.q("up")], w=6)
    with pytest.raises(ValueError, match="description"):
        g.stat("No description", "short", "", [g.q("up")], w=6)
    # SEL becomes the dashboard's filter; a half-height panel stacks under its neighbour
    dash = g.Dashboard(
        slug="t", title="prepwatch / T", description="d", tags=[], metric="prepwatch_steps_total",
        runbook_page="input_pipeline", runbook_title="x", rows=[g.Row("r", [
            g.timeseries("wide", "s", "d", [g.q("rate(prepwatch_steps_total{SEL}[5m])")], w=18),
            g.stat("top", "s", "d", [g.q("up")], w=6, h=4),
            g.stat("under", "s", "d", [g.q("up")], w=6, h=4),
        ])]).render()
    wide, top, under = dash["panels"][1:]
    assert wide["targets"][0]["expr"] == (
        'rate(prepwatch_steps_total{run=~"$run", rank=~"$rank", instance=~"$instance"}[5m])')
    assert (top["gridPos"]["x"], top["gridPos"]["y"]) == (18, 1)
    assert (under["gridPos"]["x"], under["gridPos"]["y"]) == (18, 5)
    assert [p["id"] for p in dash["panels"]] == [1, 2, 3, 4]
