"""The source of prepwatch's Grafana dashboards (dashboards/*.json are generated from it).

``grafana`` holds the conventions (datasource, variables, units, layout, links); each
other module is one dashboard, named like the capability it shows.
"""

from __future__ import annotations

from .boxes import DASHBOARD as BOXES
from .class_health import DASHBOARD as CLASS_HEALTH
from .clips import DASHBOARD as CLIPS
from .input_pipeline import DASHBOARD as INPUT_PIPELINE
from .inputs import DASHBOARD as INPUTS

DASHBOARDS = (INPUT_PIPELINE, CLASS_HEALTH, INPUTS, BOXES, CLIPS)
