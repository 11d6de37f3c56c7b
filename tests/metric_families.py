"""The exported metric families, as docs/metrics.md (the contract) names them.

Shared by the metric-contract e2e test (every family a run exports is documented) and the
alert-rule test (every recording rule's middle part is one of these families).
"""

from __future__ import annotations

import re
from functools import cache

from runbook_links import ROOT

DOCUMENTED = re.compile(r"`(prepwatch_\w+)[`{]")  # `name` or `name{labels}`
# what a family's exposed series add to its name: counters _total, histograms the rest
SERIES_SUFFIX = re.compile(r"_(total|count|sum|bucket)$")


@cache
def documented_names() -> frozenset[str]:
    return frozenset(DOCUMENTED.findall((ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")))


def is_exported_family(name: str) -> bool:
    """``name`` is a documented family, one of its series, or a counter without ``_total``
    (the Prometheus convention for a rate's recording name: ``prepwatch_steps`` for
    ``prepwatch_steps_total``)."""
    docs = documented_names()
    return name in docs or SERIES_SUFFIX.sub("", name) in docs or f"{name}_total" in docs
