"""Entry point; each subcommand lives in its own module with add_parser()/run()."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from prepwatch._version import __version__

# Subcommand modules, in help order. Each defines add_parser(subparsers).
SUBCOMMANDS = (
    "prepwatch.cli.run",
    "prepwatch.cli.agent",
    "prepwatch.cli.demo",
    "prepwatch.cli.probe_io",
    "prepwatch.cli.check_transform",
    "prepwatch.cli.dashboards",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepwatch",
        description="Watch the input side of PyTorch training from Prometheus.",
    )
    parser.add_argument("--version", action="version", version=f"prepwatch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if exc.name != name:
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s prepwatch %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except (ValueError, PermissionError, FileNotFoundError, OSError) as exc:
        print(f"prepwatch: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
