"""`prepwatch probe-io PATH`: is this dataset folder's storage fit for a DataLoader?"""

from __future__ import annotations

import argparse
import json
import sys

from prepwatch.tools import probe_io


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "probe-io", help="measure a dataset folder's storage as a DataLoader would meet it",
        description="Lists PATH (file count, size distribution), then reads a random sample of "
        "files with 1, 4, 16... concurrent readers, first touch then again, timing stat, open "
        "and read of each, and says in plain words whether the storage is small-file bound, "
        "bandwidth bound, latency bound or not the bottleneck.",
    )
    p.add_argument("path", help="dataset folder")
    p.add_argument(
        "--readers", default=",".join(str(r) for r in probe_io.DEFAULT_READERS),
        help="parallelism levels to measure, comma-separated (default 1,4,16)",
    )
    p.add_argument(
        "--sample", type=int, default=probe_io.DEFAULT_SAMPLE,
        help=f"files read per level (default {probe_io.DEFAULT_SAMPLE}); each level gets fresh "
        "files when the folder has enough, so every cold pass is a first touch",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed for the sample")
    p.add_argument(
        "--max-read-mb", type=float, default=probe_io.DEFAULT_MAX_READ_BYTES / 2**20,
        help="read at most this many MiB of each file (default 64)",
    )
    p.add_argument(
        "--max-files", type=int, default=None,
        help="stop listing after this many files (default: list everything)",
    )
    p.add_argument(
        "--evict", action="store_true",
        help="drop the sampled files' data from the page cache before the cold pass "
        "(posix_fadvise; metadata stays cached)",
    )
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    readers = probe_io.parse_readers(args.readers)
    if args.max_read_mb <= 0:
        raise ValueError(f"--max-read-mb must be > 0, got {args.max_read_mb}")
    if args.max_files is not None and args.max_files < 1:
        raise ValueError(f"--max-files must be >= 1, got {args.max_files}")
    report = probe_io.probe(
        args.path, readers=readers, sample=args.sample, seed=args.seed,
        max_read_bytes=max(1, int(args.max_read_mb * 2**20)), max_files=args.max_files,
        evict=args.evict,
    )
    if args.json:
        json.dump(_clean(report.to_dict()), sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        print(probe_io.format_text(report))
    return 0 if report.verdict.kind != "no_data" else 1


def _clean(value: object) -> object:
    """JSON has no NaN: unknown numbers become null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
