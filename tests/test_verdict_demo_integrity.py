"""The real demo's data-integrity faults are named in `prepwatch top`, summary.json and the
report. (--fault overaug needs minutes of evaluations; its finding is tested on the real
overaug run in test_diagnosis_engine.py.)"""

from __future__ import annotations

import pytest
from verdict_demo import run_demo

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("fault", "seconds", "key"),
    [
        ("normalization", 25, "off_contract"),
        ("boxes", 45, "boxes_misaligned"),
        ("video", 60, "clips_inconsistent"),
    ],
)
def test_integrity_fault_is_the_top_finding_everywhere(tmp_path, fault, seconds, key):
    got = run_demo(tmp_path, fault, seconds, key)
    assert got["top"] == got["summary"] == got["report"] == key, got["stderr"][-2000:]
    assert got["data"]["findings"][0]["alerts"]
