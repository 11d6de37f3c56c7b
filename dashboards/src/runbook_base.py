"""The runbooks' base URL: one setting, in ``alerts/RUNBOOK_BASE``, used everywhere.

Alert rules carry ``runbook_url`` as plain text (Prometheus has no variable for it), the
promtool tests repeat it, and the dashboards' panel links are generated from it. Forks and
mirrors (an internal Git server, a docs site) set it once::

    python -m dashboards.src.runbook_base https://git.example.com/ml/prepwatch/-/blob/main/docs/runbooks/
    python -m dashboards.src.runbook_base --check    # exit 1 when a file uses another base

which rewrites ``alerts/RUNBOOK_BASE``, every ``runbook_url`` in ``alerts/*.rules.yml`` and
``tests/alerts/*.test.yml``, and regenerates ``dashboards/*.json``. The URL must end where
``<page>.md#<anchor>`` is appended.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTING = ROOT / "alerts" / "RUNBOOK_BASE"
_URL = re.compile(r"(runbook_url:\s*['\"]?)(\S+?)([a-z_]+\.md(?:#[\w-]*)?['\"]?\s*$)", re.M)


def runbook_base() -> str:
    """The base URL every runbook link starts with."""
    return SETTING.read_text(encoding="utf-8").strip()


def rule_files() -> list[Path]:
    return sorted((ROOT / "alerts").glob("*.rules.yml")) + sorted(
        (ROOT / "tests" / "alerts").glob("*.test.yml"))


def other_bases(base: str) -> dict[Path, set[str]]:
    """Files whose runbook_url lines start with something else than ``base``."""
    found: dict[Path, set[str]] = {}
    for path in rule_files():
        bases = {m.group(2) for m in _URL.finditer(path.read_text(encoding="utf-8"))}
        if bases - {base}:
            found[path] = bases - {base}
    return found


def apply(base: str) -> list[Path]:
    """Write ``base`` to the setting and to every rule and rule test; return changed files."""
    if not re.match(r"^https?://\S+/$", base):
        raise ValueError(f"the runbook base must be an http(s) URL ending in '/', got {base!r}")
    SETTING.write_text(base + "\n", encoding="utf-8")
    changed = []
    for path in rule_files():
        text = path.read_text(encoding="utf-8")
        new = _URL.sub(lambda m: m.group(1) + base + m.group(3), text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.src.runbook_base",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", help="the new base URL (ends in '/')")
    parser.add_argument("--check", action="store_true", help="exit 1 when a file uses another base")
    args = parser.parse_args(argv)
    if args.check or not args.url:
        base = runbook_base()
        wrong = other_bases(base)
        for path, bases in wrong.items():
            print(f"{path}: runbook_url starts with {sorted(bases)}, not {base}", file=sys.stderr)
        print(f"runbook base: {base}")
        return 1 if wrong else 0
    for path in apply(args.url):
        print(f"wrote {path}")
    # A new process: this one imported the dashboards' source with the old base.
    return subprocess.run([sys.executable, "-m", "dashboards.src"], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
