"""Entry point; each subcommand lives in its own module with add_parser()/run()."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from prepwatch._version import __version__

# Subcommands in help order: module (defines add_parser(subparsers)) and one-line help.
# Only the chosen command's module is imported, so `prepwatch agent` never loads torch.
SUBCOMMANDS = {
    "run": ("prepwatch.cli.run", "run a training command with the agent attached"),
    "agent": ("prepwatch.cli.agent", "serve every prepwatch job on this node on one endpoint"),
    "slurm": ("prepwatch.cli.slurm", "one agent per node of a Slurm job, with file_sd targets"),
    "demo": ("prepwatch.cli.demo", "run a small CPU training job with every signal on"),
    "probe-io": ("prepwatch.cli.probe_io", "measure a dataset directory's storage"),
    "check-transform": ("prepwatch.cli.check_transform", "check that a transform moves boxes with pixels"),
    "dashboards": ("prepwatch.cli.dashboards", "install the Grafana dashboards"),
}


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; ``command`` (if given) gets its full arguments, others a help line."""
    parser = argparse.ArgumentParser(
        prog="prepwatch",
        description="Watch the input side of PyTorch training from Prometheus.",
    )
    parser.add_argument("--version", action="version", version=f"prepwatch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_line) in SUBCOMMANDS.items():
        if name == command:
            importlib.import_module(module_name).add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=help_line, add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    parser = build_parser(command)
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
        print(f"prepwatch: {set_up_message(exc)}", file=sys.stderr)
        return 2


def set_up_message(exc: BaseException) -> str:
    """The message alone: without ``[Errno N]`` when prepwatch wrote the text, and without
    a second ``prepwatch:`` prefix (the CLI adds one)."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror and exc.filename is None and (
            exc.strerror.startswith("prepwatch: ")):
        text = exc.strerror
    while text.startswith("prepwatch: "):
        text = text[len("prepwatch: "):]
    return text


if __name__ == "__main__":
    sys.exit(main())
