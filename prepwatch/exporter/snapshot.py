"""A rank's metrics for the node agent: each family's sample lines, rendered by the rank.

The agent serves what every rank on its node sends, at every scrape. Rebuilding each
sample as an object and re-encoding it cost the agent 2.4x a direct scrape of the same
series, so a rank renders its families' sample lines itself, in the text format, with its
identity labels (``run``, ``rank``) first in every label set; the agent checks each block
(prepwatch/agent/snapshot_validation.py) and concatenates blocks under one HELP/TYPE per
family.

Wire format (version 3), streamed family by family as the rank renders them, so that the
agent checks one family while the rank renders the next (two processes, two cores):

    {"v": 3, "identity": {...}}\n
    [name, type, help, unit, label_names, length]\n   then ``length`` bytes of sample lines
    ... one such pair per family, until the rank closes the connection

The lines are raw UTF-8 text (quoting them in JSON would cost both sides an escape per label
value). ``label_names`` lists each distinct sequence of the lines' own label names (after
the identity), so that the agent's grammar spells them out.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Mapping, NamedTuple

from prepwatch.exporter.text import family_header, family_lines, label_prefix

VERSION = 3
# Sample names a family may have: its name plus one of these (``_created`` is never sent).
SAMPLE_SUFFIXES = ("", "_total", "_bucket", "_count", "_sum", "_info", "_gcount", "_gsum")
IDENTITY_LABELS = ("run", "rank")  # rendered first in every label set of a rank's lines
# Families the agent merges across its ranks and serves without ``rank`` (class health:
# prepwatch/agent/merge.py says how each is reduced). A rank renders them with ``run``
# alone, so the agent has nothing to cut from their ~5,000 lines.
NODE_MERGED = frozenset({
    "prepwatch_class_samples", "prepwatch_class_correct", "prepwatch_class_skipped",
    "prepwatch_class_recall_ratio", "prepwatch_class_recall_previous_ratio",
    "prepwatch_accuracy_ratio", "prepwatch_accuracy_previous_ratio", "prepwatch_eval_rounds",
    "prepwatch_eval_last_timestamp_seconds", "prepwatch_class_rare", "prepwatch_classes",
    "prepwatch_class_recent_samples", "prepwatch_class_recent_correct",
    "prepwatch_eval_recent_passes",
})


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


def families_of(collector: Any, labels: Mapping[str, str], merged_by_node: bool = False) -> list[Family]:
    """``collector``'s families rendered with ``labels`` first in every label set (without
    ``rank`` for the NODE_MERGED families when ``merged_by_node``)."""
    return list(_rendered(collector, labels, merged_by_node))


def _rendered(collector: Any, labels: Mapping[str, str], merged_by_node: bool) -> Iterator[Family]:
    prefix = label_prefix(labels)
    node = {key: value for key, value in labels.items() if key != "rank"}
    node_prefix = label_prefix(node)
    for m in collector.collect():
        schemas: set[tuple[str, ...]] = set()
        if merged_by_node and m.name in NODE_MERGED:
            lines = family_lines(m, node, node_prefix, schemas)
        else:
            lines = family_lines(m, labels, prefix, schemas)
        yield Family(m.name, m.type, m.documentation, m.unit, lines, [list(names) for names in schemas])


def stream(collector: Any, identity: Mapping[str, Any]) -> Iterator[bytes]:
    """The snapshot of ``collector`` in the wire format, a family at a time."""
    yield json.dumps({"v": VERSION, "identity": dict(identity)}).encode() + b"\n"
    for f in _rendered(collector, identity_labels(identity), merged_by_node=True):
        lines = f.lines.encode("utf-8")
        yield json.dumps([f.name, f.type, f.help, f.unit, f.label_names, len(lines)]).encode() + b"\n"
        yield lines


def encode(collector: Any, identity: Mapping[str, Any]) -> bytes:
    """The whole snapshot at once (tests, benchmarks)."""
    return b"".join(stream(collector, identity))
