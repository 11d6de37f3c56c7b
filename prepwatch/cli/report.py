"""`prepwatch report`: one self-contained HTML file for a run, to attach to a bug or a PR.

From Prometheus (``--prometheus URL --run NAME --since 2h``): the findings, the alerts
that fired (``ALERTS``) and every panel of the shipped dashboards drawn from the panels'
own queries. From a ``summary.json``: the findings, per-rank figures and alert conditions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="one self-contained HTML report of a run",
        description="Write one HTML file (inline SVG plots, no script, no network) with a run's "
        "findings, fired alerts and every dashboard panel. Source: a Prometheus server "
        "(--prometheus URL --run NAME) or an end-of-run summary.json (--summary PATH).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prometheus", metavar="URL", help="Prometheus base URL, e.g. http://localhost:9090")
    src.add_argument("--summary", type=Path, metavar="PATH", help="a summary.json from the end of a run")
    p.add_argument("--run", help="the run label (with --prometheus)")
    p.add_argument("--since", default="2h", help="how far back to look (default 2h)")
    p.add_argument(
        "--rate-interval",
        default="1m",
        help="what the panels' $__rate_interval becomes (default 1m; >= 4 scrape intervals)",
    )
    p.add_argument("--basic-auth", metavar="USER:PASSWORD", help="for --prometheus")
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="HTML file (default prepwatch-report-RUN.html)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prepwatch.report.gather import from_prometheus, from_summary, parse_duration
    from prepwatch.report.html import render
    from prepwatch.report.prom import Prometheus

    if args.prometheus:
        if not args.run:
            raise ValueError("--prometheus needs --run NAME (the run label)")
        data = from_prometheus(
            Prometheus(args.prometheus, args.basic_auth),
            args.run,
            parse_duration(args.since),
            rate_interval=args.rate_interval,
        )
    else:
        data = from_summary(args.summary)
    out = args.output or Path(f"prepwatch-report-{data['run']}.html")
    out.write_text(render(data), encoding="utf-8")
    top = data["findings"][0]["verdict"] if data["findings"] else "healthy, no finding"
    print(f"prepwatch report: {out} ({top})", file=sys.stderr)
    return 0
