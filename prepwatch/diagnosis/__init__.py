"""Diagnosis: turn a window of prepwatch series into findings (no I/O; see engine.py)."""

from prepwatch.diagnosis.findings import Evidence, Finding
from prepwatch.diagnosis.series import Snapshot, Window
from prepwatch.diagnosis.verdicts import diagnose

__all__ = ["Evidence", "Finding", "Snapshot", "Window", "diagnose"]
