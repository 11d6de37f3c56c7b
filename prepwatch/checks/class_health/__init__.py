"""Class health: per-class recall on the augmented train stream and on clean evaluation.

``watch.class_health()`` returns the :class:`ClassHealth` component (metrics
``prepwatch_class_*``, rules ``alerts/class_health.rules.yml``, dashboard
``dashboards/class-health.json``, docs ``docs/class_health.md``).
"""

from prepwatch.checks.class_health.monitor import ClassHealth

__all__ = ["ClassHealth"]
