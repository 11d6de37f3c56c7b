"""End-of-run summary: a short verdict on stderr and summary.json beside the artifacts."""

from prepwatch.summary.build import build_summary, format_summary, write_summary
from prepwatch.summary.recorder import SeriesRecorder

__all__ = ["SeriesRecorder", "build_summary", "format_summary", "write_summary"]
