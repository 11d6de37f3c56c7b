"""Runbook URL checks shared by the alert-rule and dashboard tests.

A runbook link is ``https://github.com/prepwatch/prepwatch/blob/main/docs/runbooks/<f>.md#<a>``;
it is valid when ``docs/runbooks/<f>.md`` exists and has a heading whose GitHub anchor is ``a``.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK_PREFIX = (ROOT / "alerts" / "RUNBOOK_BASE").read_text(encoding="utf-8").strip()  # the one setting
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, - for space."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    found: list[str] = []
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        m = _HEADING.match(line)
        if m and not in_code:
            found.append(github_anchor(m.group(1)))
    return frozenset(found)


def runbook_problem(url: str) -> str | None:
    """None when ``url`` points at an existing runbook section, else what is wrong."""
    if not url.startswith(RUNBOOK_PREFIX):
        return f"{url!r} does not start with {RUNBOOK_PREFIX}"
    rest = url[len(RUNBOOK_PREFIX):]
    file_part, _, anchor = rest.partition("#")
    path = ROOT / "docs" / "runbooks" / file_part
    if not file_part.endswith(".md") or not path.is_file():
        return f"{url!r}: no runbook file docs/runbooks/{file_part}"
    if not anchor:
        return None
    if anchor not in anchors(path):
        return f"{url!r}: docs/runbooks/{file_part} has no heading with anchor #{anchor}"
    return None
