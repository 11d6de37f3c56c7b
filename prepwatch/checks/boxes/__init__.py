"""Boxes: box sanity, alignment of boxes with pixels through the user's transform, overlays.

``watch.boxes()`` returns the :class:`BoxMonitor` component (metrics ``prepwatch_box_*``
and ``prepwatch_boxes_total``, rules ``alerts/boxes.rules.yml``, dashboard
``dashboards/boxes.json``, docs ``docs/boxes.md``). :func:`check_transform` probes a
transform once, outside training (also ``prepwatch check-transform``).
"""

from prepwatch.checks.boxes.alignment import ProbeReport, TrialResult, check_transform
from prepwatch.checks.boxes.formats import FORMATS, NORMALIZED_FORMATS, iou
from prepwatch.checks.boxes.monitor import BoxMonitor

__all__ = [
    "FORMATS",
    "NORMALIZED_FORMATS",
    "BoxMonitor",
    "ProbeReport",
    "TrialResult",
    "check_transform",
    "iou",
]
