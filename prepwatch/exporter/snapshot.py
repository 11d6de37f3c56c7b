"""A rank's metrics for the node agent: each family's sample lines, rendered by the rank.

The agent serves what every rank on its node sends, at every scrape. Rebuilding each
sample as an object and re-encoding it cost the agent 2.4x a direct scrape of the same
series, so a rank renders its families' sample lines itself, in the text format, with its
identity labels (``run``, ``rank``) first in every label set; the agent checks each block
(prepwatch/agent/snapshot_validation.py) and concatenates blocks under one HELP/TYPE per
family.

Wire format: one line of JSON, ``{"v": 2, "identity": {...}, "families": [[name, type,
help, unit, label_names, length]]}``, then every family's lines, concatenated in that
order, ``length`` characters each (raw text: quoting it in JSON would cost both sides an
escape per label value). ``label_names`` lists each distinct sequence of the lines' own
label names (after the identity), so that the agent's grammar spells them out.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, NamedTuple

from prepwatch.exporter.text import family_header, family_lines, label_prefix

VERSION = 2
IDENTITY_LABELS = ("run", "rank")  # rendered first in every label set of a rank's lines


class Family(NamedTuple):
    """One metric family as text: its sample lines, each ending in a newline."""

    name: str
    type: str
    help: str
    unit: str
    lines: str
    label_names: list[list[str]]

    def header(self) -> str:
        return family_header(self.name, self.type, self.help)


def identity_labels(identity: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(identity[key]) for key in IDENTITY_LABELS}


def families_of(collector: Any, labels: Mapping[str, str]) -> list[Family]:
    """``collector``'s families rendered with ``labels`` first in every label set."""
    prefix = label_prefix(labels)
    out = []
    for m in collector.collect():
        schemas = {tuple(s.labels) for s in m.samples if not s.name.endswith("_created")}
        out.append(Family(m.name, m.type, m.documentation, m.unit,
                          family_lines(m, labels, prefix), [list(names) for names in schemas]))
    return out


def encode(collector: Any, identity: Mapping[str, Any]) -> bytes:
    families = families_of(collector, identity_labels(identity))
    head = {"v": VERSION, "identity": dict(identity), "families": [
        [f.name, f.type, f.help, f.unit, f.label_names, len(f.lines)] for f in families
    ]}
    return (json.dumps(head) + "\n" + "".join(f.lines for f in families)).encode("utf-8")
