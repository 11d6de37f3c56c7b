"""A rank's metrics as compact JSON, for the node agent to merge.

The agent must merge several processes' families into one exposition (two TYPE
lines for one name are invalid), so it needs structure, not text: JSON of the
collected samples decodes with the C parser and rebuilds prometheus_client metric
objects without re-parsing the text format.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

VERSION = 1


def encode(collector: Any, identity: dict[str, Any]) -> bytes:
    families = []
    for metric in collector.collect():
        samples = [
            [s.name, s.labels, s.value] for s in metric.samples if not s.name.endswith("_created")
        ]
        families.append([metric.name, metric.type, metric.documentation, metric.unit, samples])
    return json.dumps({"v": VERSION, "identity": identity, "families": families}).encode()


def decode(payload: bytes) -> tuple[dict[str, Any], list[Metric]]:
    data = json.loads(payload)
    if data.get("v") != VERSION:
        raise ValueError(f"snapshot version {data.get('v')!r} is not {VERSION}")
    metrics = []
    for name, mtype, doc, unit, samples in data["families"]:
        metric = Metric(name, doc, mtype, unit)
        metric.samples = [Sample(s[0], s[1], float(s[2])) for s in samples]
        metrics.append(metric)
    return data["identity"], metrics


def merge(sources: Iterable[tuple[dict[str, str], list[Metric]]]) -> list[Metric]:
    """One family per name; each source's samples get its identity labels."""
    merged: dict[str, Metric] = {}
    for labels, metrics in sources:
        for metric in metrics:
            target = merged.get(metric.name)
            if target is None:
                target = merged[metric.name] = Metric(
                    metric.name, metric.documentation, metric.type, metric.unit
                )
            elif target.type != metric.type:
                continue  # a conflicting definition from another process: keep the first
            for s in metric.samples:
                combined = dict(labels)
                combined.update(s.labels)
                target.samples.append(Sample(s.name, combined, s.value, s.timestamp, s.exemplar))
    return list(merged.values())
