"""docs/api.md lists every public parameter (issue 13 item 7): a new option without a line
in the reference fails here."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import prepwatch
from prepwatch.checks.boxes import BoxMonitor
from prepwatch.checks.class_health import ClassHealth
from prepwatch.checks.clips import ClipMonitor
from prepwatch.checks.inputs import Declared, InputMonitor
from prepwatch.watch import Watch

API = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text(encoding="utf-8")
INTERNAL = {"self", "ctx", "options", "params"}  # the Context is the Watch's; **options are below


def _public_callables() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = [(f"prepwatch.{n}", getattr(prepwatch, n))
                                       for n in ("start", "stop", "stage", "timed_open", "instrument_open")]
    found += [(f"Watch.{n}", m) for n, m in inspect.getmembers(Watch, inspect.isfunction)
              if not n.startswith("_")]
    found += [(f"{c.__name__}.__init__", c.__init__)
              for c in (ClassHealth, InputMonitor, BoxMonitor, ClipMonitor, Declared)]
    return found


CASES = [(f"{where}({p})", p) for where, fn in _public_callables()
         for p in inspect.signature(fn).parameters if p not in INTERNAL]


def test_the_reference_covers_the_signatures() -> None:
    assert len(CASES) > 80  # start, Watch, four components, Declared


@pytest.mark.parametrize("where, name", CASES)
def test_every_public_parameter_is_in_the_api_reference(where: str, name: str) -> None:
    assert re.search(rf"`{re.escape(name)}`|\b{re.escape(name)}=|[(, ]{re.escape(name)}[,)=]", API), (
        f"{where}: parameter {name!r} is not in docs/api.md")


def test_every_watch_method_and_component_is_named() -> None:
    for name, _ in inspect.getmembers(Watch, inspect.isfunction):
        if not name.startswith("_"):
            assert f"`{name}(" in API, f"Watch.{name} is not in docs/api.md"
    for cls in (ClassHealth, InputMonitor, BoxMonitor, ClipMonitor):
        assert f"`{cls.__name__}`" in API
