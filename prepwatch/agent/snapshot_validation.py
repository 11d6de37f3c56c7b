"""Check a rank's snapshot as a whole before any of it reaches the node's exposition.

A rank is another process, possibly buggy, possibly not ours in spirit: what it sends is
data. One bad value (an identity that is not a dict, a label value of 5, a metric name
with a newline, a label named ``run`` that would override its identity, a family named
like the agent's own) must cost that rank its series for this scrape, never the whole
endpoint or another rank's series; and nothing it sends may become a second series in
the text the agent serves.
"""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from prepwatch.agent.rank_reader import RankDropped
from prepwatch.exporter import snapshot

MAX_SERIES = 100_000  # a full job (1000 classes x 2 splits, 8 GPUs, 8 workers) is ~6,000
MAX_TEXT = 4096  # HELP text, run name, label value
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
UNIT = re.compile(r"[a-zA-Z0-9_]*\Z")
TYPES = {"counter", "gauge", "summary", "histogram", "gaugehistogram", "unknown", "info", "stateset"}
SUFFIXES = ("", "_total", "_bucket", "_count", "_sum", "_created", "_info", "_gcount", "_gsum")
IDENTITY_LABELS = {"run", "rank"}  # the agent adds these from the rank's identity
RESERVED_PREFIX = "prepwatch_agent_"
RESERVED_NAMES = {"prepwatch_rank_up"}


def _bad(detail: str) -> RankDropped:
    return RankDropped("invalid_snapshot", detail)


def _text(value: Any, what: str, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise _bad(f"{what} must be a {'non-empty ' if not empty else ''}string, got {value!r:.80}")
    if len(value) > MAX_TEXT:
        raise _bad(f"{what} is longer than {MAX_TEXT} characters")
    return value


def _identity(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise _bad(f"identity must be an object, got {type(raw).__name__}")
    run = _text(raw.get("run"), "identity run", empty=False)
    rank = raw.get("rank")
    if isinstance(rank, bool) or not isinstance(rank, (int, str)) or rank == "" or \
            (isinstance(rank, int) and rank < 0):
        raise _bad(f"identity rank must be a non-negative integer, got {rank!r:.80}")
    return {"run": run, "rank": _text(str(rank), "identity rank")}


def _family(raw: Any) -> Metric:
    if not isinstance(raw, list) or len(raw) != 5:
        raise _bad("a family must be [name, type, help, unit, samples]")
    name, mtype, doc, unit, samples = raw
    if not isinstance(name, str) or not METRIC_NAME.match(name):
        raise _bad(f"metric name {name!r:.80} does not match [a-zA-Z_:][a-zA-Z0-9_:]*")
    if name.startswith(RESERVED_PREFIX) or name in RESERVED_NAMES:
        raise RankDropped("reserved_name", f"metric {name} is the agent's own")
    if mtype not in TYPES:
        raise _bad(f"metric {name} has type {mtype!r:.40}")
    _text(doc, f"help of {name}")
    if not isinstance(unit, str) or not UNIT.match(unit) or (unit and not name.endswith("_" + unit)):
        raise _bad(f"metric {name} has unit {unit!r:.40}")
    if not isinstance(samples, list):
        raise _bad(f"samples of {name} must be a list")
    metric = Metric(name, doc, mtype, unit)
    allowed = {name + suffix for suffix in SUFFIXES}
    out = metric.samples
    for s in samples:
        if not isinstance(s, list) or len(s) != 3:
            raise _bad(f"a sample of {name} must be [name, labels, value]")
        sname, labels, value = s
        if sname not in allowed:
            raise _bad(f"sample {sname!r:.80} does not belong to family {name}")
        if not isinstance(labels, dict):
            raise _bad(f"labels of {name} must be an object")
        for key, val in labels.items():
            if not LABEL_NAME.match(key) or key.startswith("__"):
                raise _bad(f"label name {key!r:.80} of {name} is not a valid label name")
            if key in IDENTITY_LABELS:
                raise RankDropped("reserved_name",
                                  f"label {key!r} of {name} would override the rank's identity")
            _text(val, f"label {key} of {name}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(f"value of {sname} must be a number, got {value!r:.40}")
        try:
            out.append(Sample(sname, labels, float(value)))
        except OverflowError:
            raise _bad(f"value of {sname} is out of range") from None
    return metric


def decode(payload: bytes) -> tuple[dict[str, str], list[Metric]]:
    """(identity labels, families) of a snapshot, or :class:`RankDropped`."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("v") != snapshot.VERSION:
        raise _bad(f"not a version {snapshot.VERSION} snapshot")
    identity = _identity(data.get("identity"))
    families = data.get("families")
    if not isinstance(families, list):
        raise _bad("families must be a list")
    total = sum(len(f[4]) for f in families if isinstance(f, list) and len(f) == 5
                and isinstance(f[4], list))
    if total > MAX_SERIES:
        raise RankDropped("too_many_series", f"{total} series is more than {MAX_SERIES}")
    metrics, seen = [], set()
    for raw in families:
        metric = _family(raw)
        if metric.name in seen:
            raise _bad(f"metric {metric.name} appears twice")
        seen.add(metric.name)
        metrics.append(metric)
    return identity, metrics
