"""`prepwatch top [URL]`: a live terminal view of a job, an agent (all ranks) or the demo.

Scrapes the /metrics page every few seconds, keeps a short window of snapshots and runs
the diagnosis engine on it: the findings on top, the figures per rank below. With `rich`
installed (`pip install prepwatch[top]`) and a terminal, it redraws in place; otherwise
(piped, or no rich) it prints one plain block per refresh. q or Ctrl-C quits.
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import select
import sys
import time
import urllib.request
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from prepwatch.diagnosis.engine import RankStats, rank_stats
from prepwatch.diagnosis.findings import Finding, format_value
from prepwatch.diagnosis.series import Snapshot, Window, parse_text
from prepwatch.diagnosis.verdicts import diagnose

DEFAULT_URL = "http://127.0.0.1:9400/metrics"
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "top",
        help="live terminal view with the current findings",
        description="Live view of a prepwatch endpoint (a job, the node agent or the demo): "
        "throughput, data-wait share, step p50/p99, GPU busy, worker CPU and stage timings, IO, "
        "per rank, with the current findings on top. q or Ctrl-C quits.",
    )
    p.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"metrics URL (default {DEFAULT_URL})")
    p.add_argument("--every", type=float, default=2.0, help="refresh period in seconds (default 2)")
    p.add_argument(
        "--window",
        type=float,
        default=600.0,
        help="seconds of history kept (default 600: the rules' windows, rates over the last 5 min "
        "and quantiles over 10 min, as the alerts see them; less for a snappier view)",
    )
    p.add_argument("--plain", action="store_true", help="line output even in a terminal")
    p.add_argument("--once", action="store_true", help="take two scrapes, print once, exit")
    p.add_argument("--basic-auth", metavar="USER:PASSWORD", help="HTTP basic auth for the endpoint")
    p.set_defaults(func=run)


def fetch(url: str, auth: Optional[str], timeout: float = 5.0) -> Snapshot:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - user-given URL
        return parse_text(resp.read().decode("utf-8", "replace"), time.time())


def _f(v: float, unit: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format_value(v, unit)


def _stages(s: RankStats) -> str:
    if not s.stages:
        return "-"
    return " ".join(f"{k[:3]} {_f(v, 's')}" for k, v in sorted(s.stages.items(), key=lambda kv: -kv[1])[:3])


COLUMNS = (
    "run",
    "rank",
    "steps/s",
    "samples/s",
    "data-wait",
    "p50",
    "p99",
    "GPU",
    "wkr CPU",
    "stages/sample",
    "opens/s",
    "B/open",
)


def rows(stats: list[RankStats]) -> list[tuple[str, ...]]:
    return [
        (
            s.run,
            s.rank,
            f"{s.steps_per_s:.2f}",
            f"{s.samples_per_s:.0f}",
            _f(s.wait_share, "%"),
            _f(s.step_p50, "s"),
            _f(s.step_p99, "s"),
            _f(s.gpu_busy, "%"),
            _f(s.worker_cpu, "%"),
            _stages(s),
            f"{s.opens_per_s:.0f}" if s.opens_per_s else "-",
            _f(s.bytes_per_open, "B"),
        )
        for s in stats
    ]


def headline(url: str, w: Window, stats: list[RankStats]) -> str:
    steps = sum(s.steps_per_s for s in stats)
    samples = sum(s.samples_per_s for s in stats)
    return (
        f"prepwatch top  {url}  rates over {w.span_seconds(300):.0f}s  ranks {len(stats)}  "
        f"{steps:.2f} steps/s  {samples:.0f} samples/s"
    )


def plain_frame(url: str, w: Window, findings: list[Finding]) -> str:
    stats = rank_stats(w)
    lines = [time.strftime("%H:%M:%S ") + headline(url, w, stats)]
    if len(w.snapshots) < 2:
        lines.append("  collecting (needs two scrapes)...")
    elif not findings:
        lines.append("  HEALTHY: no finding")
    for f in findings[:4]:
        lines.append(f"  {f.severity.upper()} [{f.key}]: {f.verdict}")
        lines.append("    evidence: " + "; ".join(e.text().strip() for e in f.evidence[:4]))
        lines.append(f"    try first: {f.fix}")
    table = [COLUMNS, *rows(stats)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    for r in table:
        lines.append("  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r)))
    return "\n".join(lines)


def rich_frame(url: str, w: Window, findings: list[Finding]) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    stats = rank_stats(w)
    parts: list[Any] = [Text(headline(url, w, stats), style="bold")]
    if len(w.snapshots) < 2:
        parts.append(Text("collecting (needs two scrapes)...", style="dim"))
    elif not findings:
        parts.append(Panel(Text("HEALTHY: no finding", style="bold green"), border_style="green"))
    for f in findings[:3]:
        body = Text()
        body.append(f.verdict + "\n", style="bold")
        body.append("evidence: " + "; ".join(e.text().strip() for e in f.evidence[:5]) + "\n")
        body.append("causes: " + " > ".join(f.causes[:3]) + "\n", style="dim")
        body.append("try first: " + f.fix, style="green")
        style = SEVERITY_STYLE.get(f.severity, "white")
        parts.append(
            Panel(
                body,
                title=Text(f" {f.severity.upper()} [{f.key}] ", style=style),
                title_align="left",
                border_style=style,
            )
        )
    table = Table(expand=True, header_style="bold")
    for c in COLUMNS:
        table.add_column(c, justify="left" if c in ("run", "rank", "stages/sample") else "right")
    for r in rows(stats):
        table.add_row(*r)
    parts.append(table)
    parts.append(Text("q or Ctrl-C to quit", style="dim"))
    return Group(*parts)


def since_start(snap: Snapshot, window: float) -> list[Snapshot]:
    """A zero snapshot at the job's start, so a fresh `top` judges the run so far (counters
    start at zero with the job) instead of waiting to build up its own history."""
    starts = [v for (n, _), v in snap.samples.items() if n == "prepwatch_start_timestamp_seconds" and v > 0]
    if starts and snap.t - window < min(starts) < snap.t:
        return [Snapshot(min(starts), {})]
    return []


@contextmanager
def keys() -> Iterator[Any]:
    """Yield a function returning True once q was pressed (cbreak mode; restored on exit)."""
    if not sys.stdin.isatty():
        yield lambda: False
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def pressed() -> bool:
        while select.select([fd], [], [], 0)[0]:
            if os.read(fd, 1) in (b"q", b"Q"):
                return True
        return False

    try:
        yield pressed
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def _wait(pressed: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pressed():
            return True
        time.sleep(0.05)
    return False


def run(args: argparse.Namespace) -> int:
    if args.every <= 0 or args.window <= 0:
        raise ValueError("--every and --window must be > 0")
    snaps: list[Snapshot] = []
    use_rich = False
    if not args.plain and sys.stdout.isatty():
        try:
            import rich  # noqa: F401

            use_rich = True
        except ImportError:
            pass

    def tick() -> tuple[Window, list[Finding], Optional[str]]:
        error = None
        try:
            snap = fetch(args.url, args.basic_auth)
            if not snaps:
                snaps.extend(since_start(snap, args.window))
            snaps.append(snap)
        except OSError as exc:
            error = f"cannot scrape {args.url}: {exc}"
        while len(snaps) > 2 and snaps[1].t <= snaps[-1].t - args.window:
            snaps.pop(0)
        if not snaps:
            raise OSError(error)
        w = Window(list(snaps), start=snaps[0].t)
        return w, (diagnose(w) if len(snaps) > 1 else []), error

    try:
        if args.once:
            tick()
            time.sleep(args.every)
            w, findings, _ = tick()
            print(plain_frame(args.url, w, findings), flush=True)
            return 0
        with keys() as pressed:
            if use_rich:
                from rich.console import Console
                from rich.live import Live

                with Live(console=Console(), auto_refresh=False, screen=False, transient=False) as live:
                    while True:
                        w, findings, error = tick()
                        frame = rich_frame(args.url, w, findings)
                        live.update(frame, refresh=True)
                        if _wait(pressed, args.every):
                            break
            else:
                while True:
                    w, findings, error = tick()
                    print(
                        plain_frame(args.url, w, findings) + (f"\n  ! {error}" if error else ""), flush=True
                    )
                    if _wait(pressed, args.every):
                        break
    except KeyboardInterrupt:
        pass
    return 0
