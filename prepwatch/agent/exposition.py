"""The node's exposition: every source's families, one HELP/TYPE per family.

The text format requires all lines of a family to follow its one HELP/TYPE header, so
blocks of one name from several ranks (and the agent's own) are concatenated under the
first source's header; a source defining the name with another type is left out of that
family (the format has one type per name).
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, Optional

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from prepwatch.exporter.snapshot import SAMPLE_SUFFIXES, Family, families_of

Source = tuple[dict[str, str], list[Family]]


def _wanted(name: str, names: Optional[set[str]]) -> bool:
    """``name[]`` filtering as prometheus_client does it: by family or by sample name."""
    return names is None or any(name + suffix in names for suffix in SAMPLE_SUFFIXES)


def assemble(sources: Iterable[Source], own: Iterable[Metric],
             names: Optional[set[str]] = None) -> list[Family]:
    """One family per name: the lines of every source's family of that name (sources'
    lines carry their identity already) and of the agent's ``own`` metrics."""
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
                blocks[family.name] = [family.lines]
            elif head.type == family.type:
                blocks[family.name].append(family.lines)
    return [head._replace(lines="".join(blocks[name])) for name, head in heads.items()]


def render(families: Iterable[Family]) -> bytes:
    """The text format (0.0.4) of assembled families."""
    parts: list[str] = []
    for f in families:
        parts += (f.header(), f.lines)
    return "".join(parts).encode("utf-8")


_LINE = re.compile(r"([^{\s]+)(?:\{(.*)\})? (\S+)(?: \S+)?\n")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPED = {"n": "\n", '"': '"', "\\": "\\"}


def _label_value(raw: str) -> str:
    return _ESCAPE.sub(lambda m: _UNESCAPED.get(m.group(1), m.group(0)), raw) if "\\" in raw else raw


def metrics_of(families: Iterable[Family]) -> Iterator[Metric]:
    """Assembled families as prometheus_client metric objects, for in-process readers.

    The lines were rendered by prepwatch's encoder and checked against its grammar, so a
    regular expression reads them (~20x faster than prometheus_client's general parser)."""
    for family in families:
        metric = Metric(family.name, family.help, family.type, family.unit)
        for sname, labels, value in _LINE.findall(family.lines):
            metric.samples.append(Sample(
                sname, {k: _label_value(v) for k, v in _LABEL.findall(labels)}, float(value)))
        yield metric


class _Listed:
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics
