"""The node's exposition: every source's families, one HELP/TYPE per family.

The text format requires all lines of a family to follow its one HELP/TYPE header, so
blocks of one name from several ranks (and the agent's own) are concatenated under the
first source's header; a source defining the name with another type is left out of that
family (the format has one type per name).
"""

from __future__ import annotations

from typing import Iterable, Optional

from prometheus_client.core import Metric

from prepwatch.exporter.snapshot import Family, families_of

SUFFIXES = ("", "_total", "_bucket", "_count", "_sum", "_info", "_gcount", "_gsum")


def _wanted(name: str, names: Optional[set[str]]) -> bool:
    """``name[]`` filtering as prometheus_client does it: by family or by sample name."""
    return names is None or any(name + suffix in names for suffix in SUFFIXES)


def render(
    sources: Iterable[tuple[dict[str, str], list[Family]]],
    own: Iterable[Metric],
    names: Optional[set[str]] = None,
) -> bytes:
    """The text exposition of ``sources`` (families rendered with their identity) and of
    the agent's ``own`` metric objects (rendered here, without identity)."""
    heads: dict[str, Family] = {}
    blocks: dict[str, list[str]] = {}
    everything = [families for _labels, families in sources]
    everything.append(families_of(_Listed(own), {}))
    for families in everything:
        for family in families:
            if not _wanted(family.name, names):
                continue
            head = heads.get(family.name)
            if head is None:
                heads[family.name] = family
                blocks[family.name] = [family.header(), family.lines]
            elif head.type == family.type:
                blocks[family.name].append(family.lines)
    return "".join("".join(parts) for parts in blocks.values()).encode("utf-8")


class _Listed:
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics
