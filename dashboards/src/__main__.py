"""Write dashboards/*.json from this source, or check that the committed files match it.

    python -m dashboards.src            # (re)write dashboards/*.json, remove stale ones
    python -m dashboards.src --check    # exit 1 when a file differs, is missing or is stale

Every ``*.json`` in dashboards/ is an output of this source: edit the modules here, never
the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import DASHBOARDS

OUT = Path(__file__).resolve().parents[1]


def render_all() -> dict[str, str]:
    """File name -> the JSON text the source produces."""
    files: dict[str, str] = {}
    for dash in DASHBOARDS:
        name = f"{dash.slug}.json"
        if name in files:
            raise ValueError(f"two dashboards write {name}")
        files[name] = json.dumps(dash.render(), indent=2, ensure_ascii=False) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.src", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    parser.add_argument("--out", type=Path, default=OUT, help="where the JSON goes (default: dashboards/)")
    args = parser.parse_args(argv)
    files = render_all()
    present = {p.name for p in args.out.glob("*.json")}
    stale = sorted(present - set(files))
    differ = sorted(n for n, text in files.items()
                    if n not in present or (args.out / n).read_text(encoding="utf-8") != text)
    if args.check:
        for name in differ:
            print(f"{args.out / name}: differs from what dashboards/src produces", file=sys.stderr)
        for name in stale:
            print(f"{args.out / name}: not produced by dashboards/src (remove it)", file=sys.stderr)
        if differ or stale:
            print("run: python -m dashboards.src", file=sys.stderr)
            return 1
        return 0
    for name in differ:
        (args.out / name).write_text(files[name], encoding="utf-8")
        print(f"wrote {args.out / name}")
    for name in stale:
        (args.out / name).unlink()
        print(f"removed {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
