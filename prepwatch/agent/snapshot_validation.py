"""Check a rank's snapshot as a whole before any of it reaches the node's exposition.

A rank is another process, possibly buggy, possibly not ours in spirit: what it sends is
data. One bad value (an identity that is not a dict, a metric name with a newline, a line
that starts another family's series, a label named ``run`` that would override its
identity, another rank's identity, a label named twice, a family named like the agent's
own) must cost that rank its series for this scrape, never the whole endpoint or another
rank's series; and nothing it sends may become a line the agent did not check.

A rank sends its sample lines already rendered (prepwatch/exporter/snapshot.py), so the
check is a grammar: each family's block must match, in full, lines of exactly that family
with exactly this rank's identity first (its ``run`` alone for the families the agent
merges across ranks). The grammar is a compiled regular expression
(run in C, ~4 ms for a full job's 6,000 lines); only a block that fails is read line by
line, to say why. Most blocks do not change between scrapes (class health changes when it
flushes), so a :class:`SnapshotChecker` kept per rank does not run the grammar again on a
block identical to one it accepted from that rank at the previous scrape, with the same
identity and label names: comparing two strings costs a memcmp, not a parse.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, NamedTuple, Optional

import numpy as np

from prepwatch.agent.rank_reader import RankDropped
from prepwatch.exporter import snapshot
from prepwatch.exporter.snapshot import Family
from prepwatch.exporter.text import label_prefix

MAX_SERIES = 100_000  # a full job (1000 classes x 2 splits, 8 GPUs, 8 workers) is ~6,000
MAX_FAMILIES = 2_000  # a full job has ~60; each new one costs the agent a compiled grammar
MAX_TEXT = 4096  # HELP text, run name, label value
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
UNIT = re.compile(r"[a-zA-Z0-9_]*\Z")
TYPES = {"counter", "gauge", "summary", "histogram", "gaugehistogram", "unknown", "info", "stateset"}
SUFFIXES = snapshot.SAMPLE_SUFFIXES
IDENTITY_LABELS = set(snapshot.IDENTITY_LABELS)  # the rank's identity, first in every label set
RESERVED_PREFIX = "prepwatch_agent_"
RESERVED_NAMES = {"prepwatch_rank_up"}

MAX_HEADER_LINE = 1 << 20  # bytes in the snapshot's first line or a family's header
MAX_LINE = 16384  # bytes in one sample line: bounds its label values (Prometheus has its own)
_VALUE = r'[^"\\\n]*+(?:\\[\\"n][^"\\\n]*+)*+'  # an escaped label value, never backtracked
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_NUMBER = r"(?:[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]Inf|NaN)"
_TAIL = r"\} " + _NUMBER + r"(?: -?[0-9]{1,19})?\n"
MAX_SCHEMAS = 64  # distinct label-name sequences in one family
_grammars: dict[tuple[str, str, tuple[tuple[str, ...], ...]], re.Pattern[str]] = {}
_MAX_GRAMMARS = 20_000  # families x ranks a node serves; a rank inventing names cannot grow it


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


def _schemas(raw: Any, name: str) -> tuple[tuple[str, ...], ...]:
    """The family's label-name sequences, each a valid, distinct, non-identity name list
    (a label named twice would make Prometheus refuse the node's whole scrape)."""
    if not isinstance(raw, list) or len(raw) > MAX_SCHEMAS:
        raise _bad(f"label names of {name} must be a list of at most {MAX_SCHEMAS} lists")
    out = []
    for names in raw:
        if not isinstance(names, list):
            raise _bad(f"label names of {name} must be lists")
        for key in names:
            if not isinstance(key, str) or not LABEL_NAME.match(key) or key.startswith("__"):
                raise _bad(f"label name {key!r:.80} of {name} is not a valid label name")
            if key in IDENTITY_LABELS:
                raise RankDropped("reserved_name",
                                  f"label {key!r} of {name} would override the rank's identity")
        if len(set(names)) != len(names):
            raise _bad(f"a sample of {name} names a label twice: {names!r:.80}")
        out.append(tuple(names))
    return tuple(sorted(set(out)))


def _grammar(name: str, ident: str, schemas: tuple[tuple[str, ...], ...]) -> re.Pattern[str]:
    """Lines of family ``name`` only, labelled ``ident`` first, then one of ``schemas``."""
    key = (name, ident, schemas)
    grammar = _grammars.get(key)
    if grammar is None:
        if len(_grammars) >= _MAX_GRAMMARS:
            _grammars.clear()
        names = "|".join(re.escape(name + suffix) for suffix in SUFFIXES)
        labels = "|".join("".join(f',{k}="{_VALUE}"' for k in schema) for schema in schemas)
        grammar = _grammars[key] = re.compile(
            "(?:(?:" + names + r")\{" + re.escape(ident) + "(?:" + labels + ")" + _TAIL + ")*"
        )
    return grammar


def _why(name: str, lines: str, ident: str, schemas: tuple[tuple[str, ...], ...]) -> RankDropped:
    """The first line of a block that failed its grammar, and what is wrong with it."""
    if lines and not lines.endswith("\n"):
        return _bad(f"the lines of {name} do not end with a newline")
    one = _grammar(name, ident, schemas)
    for line in lines.splitlines(keepends=True):
        if one.fullmatch(line):
            continue
        head = line.split("{", 1)[0]
        if head not in {name + suffix for suffix in SUFFIXES}:
            return _bad(f"line {line[:80]!r} does not belong to family {name}")
        if not line.startswith(f"{head}{{{ident}"):
            return RankDropped("reserved_name",
                               f"line {line[:80]!r} of {name} does not carry this rank's identity first")
        if re.search(r',(?:run|rank)="', line[len(head) + 1 + len(ident):]):
            return RankDropped("reserved_name",
                               f"a label of {name} would override the rank's identity: {line[:80]!r}")
        return _bad(f"line {line[:80]!r} of {name} is not a valid sample line with the label "
                    f"names it declared")
    return _bad(f"the lines of {name} are not valid sample lines")


class _Accepted(NamedTuple):
    """A family block accepted from a rank, with everything its check depended on."""

    meta: list[Any]  # [name, type, help, unit, label_names] as sent
    ident: str
    lines: str
    family: Family


def _family(raw: list[Any], lines: str, ident: str, previous: dict[str, _Accepted]) -> _Accepted:
    name, mtype, doc, unit, label_names, _length = raw
    if isinstance(name, str):
        before = previous.get(name)
        if before is not None and before.lines == lines and before.ident == ident and \
                before.meta == raw[:5]:
            return before  # checked at the last scrape, and nothing it depended on changed
    if not isinstance(name, str) or not METRIC_NAME.match(name):
        raise _bad(f"metric name {name!r:.80} does not match [a-zA-Z_:][a-zA-Z0-9_:]*")
    if name.startswith(RESERVED_PREFIX) or name in RESERVED_NAMES:
        raise RankDropped("reserved_name", f"metric {name} is the agent's own")
    if mtype not in TYPES:
        raise _bad(f"metric {name} has type {mtype!r:.40}")
    _text(doc, f"help of {name}")
    if not isinstance(unit, str) or not UNIT.match(unit) or (unit and not name.endswith("_" + unit)):
        raise _bad(f"metric {name} has unit {unit!r:.40}")
    schemas = _schemas(label_names, name)
    if not _grammar(name, ident, schemas).fullmatch(lines):
        raise _why(name, lines, ident, schemas)
    return _Accepted(raw[:5], ident, lines, Family(name, mtype, doc, unit, lines, label_names))


def _longest_line(block: bytes) -> int:
    """Bytes in the longest line of ``block`` (newline excluded), in one vectorised pass."""
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
    return int(np.diff(np.concatenate(([-1], ends, [len(block)]))).max()) - 1


class _Pieces:
    """The rank's byte stream, cut into JSON lines and blocks of a stated length."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""
        self._at = 0

    def _more(self, wanted: int = 0) -> bool:
        """Append the next chunks, as many as make ``wanted`` bytes beyond the read point
        (one join: a large block is not copied once per chunk)."""
        parts, have = [self._buffer[self._at:]], len(self._buffer) - self._at
        while True:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            parts.append(chunk)
            have += len(chunk)
            if have >= wanted:
                break
        self._buffer, self._at = b"".join(parts), 0
        return len(parts) > 1

    def line(self, what: str) -> Optional[bytes]:
        """The next line (without its newline); None at the end of the stream."""
        while True:
            end = self._buffer.find(b"\n", self._at)
            if end >= 0:
                out = self._buffer[self._at:end]
                self._at = end + 1
                return out
            if len(self._buffer) - self._at > MAX_HEADER_LINE:
                raise _bad(f"{what} is longer than {MAX_HEADER_LINE} bytes")
            if not self._more():
                if self._at < len(self._buffer):
                    raise _bad(f"the snapshot ends inside {what}")
                return None

    def block(self, size: int, what: str) -> bytes:
        if len(self._buffer) - self._at < size and (
                not self._more(size) or len(self._buffer) - self._at < size):
            raise _bad(f"the snapshot ends inside {what}")
        out = self._buffer[self._at:self._at + size]
        self._at += size
        return out


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"{what} is not JSON: {exc}") from None


class SnapshotChecker:
    """Decodes the snapshots of one rank, remembering the blocks it accepted last time."""

    def __init__(self) -> None:
        self._accepted: dict[str, _Accepted] = {}

    def decode(self, chunks: Iterable[bytes]) -> tuple[dict[str, str], list[Family]]:
        """(identity labels, families) of the snapshot ``chunks`` make up, checked family by
        family as they arrive, or :class:`RankDropped`."""
        pieces = _Pieces(chunks)
        head = pieces.line("the snapshot's first line")
        data = _json(head or b"", "the snapshot's first line")
        if not isinstance(data, dict) or data.get("v") != snapshot.VERSION:
            raise _bad(f"not a version {snapshot.VERSION} snapshot")
        identity = _identity(data.get("identity"))
        idents = {False: label_prefix(identity), True: label_prefix({"run": identity["run"]})}
        out, series = [], 0
        accepted: dict[str, _Accepted] = {}
        while True:
            meta = pieces.line("a family's header")
            if meta is None:
                break
            if len(out) == MAX_FAMILIES:
                raise _bad(f"more than {MAX_FAMILIES} families")
            raw = _json(meta, "a family's header")
            if not (isinstance(raw, list) and len(raw) == 6 and isinstance(raw[5], int)
                    and not isinstance(raw[5], bool) and raw[5] >= 0):
                raise _bad("a family's header must be [name, type, help, unit, label_names, length]")
            block = pieces.block(raw[5], f"the lines of {raw[0]!r:.80}")
            series += block.count(b"\n")
            if series > MAX_SERIES:
                raise RankDropped("too_many_series", f"more than {MAX_SERIES} series")
            if len(block) > MAX_LINE and _longest_line(block) > MAX_LINE:
                raise _bad(f"a line of {raw[0]!r:.80} is longer than {MAX_LINE} bytes")
            try:
                text = block.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _bad(f"the lines of {raw[0]!r:.80} are not UTF-8: {exc}") from None
            ident = idents[isinstance(raw[0], str) and raw[0] in snapshot.NODE_MERGED]
            checked = _family(raw, text, ident, self._accepted)
            family = checked.family
            if family.name in accepted:
                raise _bad(f"metric {family.name} appears twice")
            accepted[family.name] = checked
            out.append(family)
        self._accepted = accepted  # only from a snapshot accepted whole
        return identity, out


def decode(payload: bytes) -> tuple[dict[str, str], list[Family]]:
    """(identity labels, families) of a whole snapshot, or :class:`RankDropped`."""
    return SnapshotChecker().decode([payload])
