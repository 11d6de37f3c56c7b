"""Clips: temporal consistency of video clip augmentation.

``watch.clips()`` returns the :class:`ClipMonitor` component (metrics ``prepwatch_clip_*``,
rules ``alerts/clips.rules.yml``, dashboard ``dashboards/clips.json``, docs
``docs/clips.md``). :func:`clip_consistency` measures one raw/augmented pair; the
``synthetic`` clips are what the probe feeds a transform.
"""

from prepwatch.checks.clips.consistency import DEFAULT_THRESHOLD, ClipReport, clip_consistency
from prepwatch.checks.clips.monitor import ClipMonitor
from prepwatch.checks.clips.synthetic import brightness_ramp, moving_object_clip, textured_clip

__all__ = [
    "DEFAULT_THRESHOLD",
    "ClipMonitor",
    "ClipReport",
    "brightness_ramp",
    "clip_consistency",
    "moving_object_clip",
    "textured_clip",
]
