"""`prepwatch dashboards push`: install or update the dashboards in an existing Grafana."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from prepwatch.tools.grafana_push import (
    DEFAULT_FOLDER,
    ENV_DASHBOARDS_DIR,
    GrafanaUnreachable,
    check_reachable,
    connection_reason,
    credential_from,
    default_dashboards_dir,
    load_dashboards,
    push_dashboards,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dashboards", help="install prepwatch's Grafana dashboards",
        description="Manage prepwatch's Grafana dashboards in a Grafana that is not "
        "provisioned from files (docker-compose.yml provisions its own).",
    )
    sub = p.add_subparsers(dest="dashboards_command", metavar="ACTION")
    push = sub.add_parser(
        "push", help="install or update the dashboards (idempotent)",
        description="Create or update every dashboard under its stable uid in FOLDER. "
        "Unchanged dashboards are left alone; running it twice changes nothing.",
    )
    push.add_argument("--grafana-url", required=True, metavar="URL",
                      help="e.g. http://127.0.0.1:3000 (a sub-path like /grafana is kept)")
    auth = push.add_mutually_exclusive_group()
    auth.add_argument("--token", default=None,
                      help="service-account token (default: $GRAFANA_TOKEN)")
    auth.add_argument("--user", default=None, help="basic-auth user (with --password)")
    push.add_argument("--password", default=None,
                      help="basic-auth password (default: $GRAFANA_PASSWORD)")
    push.add_argument("--folder", default=DEFAULT_FOLDER,
                      help=f"folder title, created when missing (default {DEFAULT_FOLDER!r})")
    push.add_argument("--dir", type=Path, default=None, dest="dashboards_dir", metavar="PATH",
                      help="directory of dashboard JSON files (default: the repository's "
                      f"dashboards/ next to the package, or ${ENV_DASHBOARDS_DIR})")
    push.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in seconds")
    push.set_defaults(func=run)
    p.set_defaults(func=lambda _args: (p.print_help(), 2)[1])


def run(args: argparse.Namespace) -> int:
    token = args.token
    password = args.password
    if args.user:
        password = password or os.environ.get("GRAFANA_PASSWORD")
    elif password:
        raise ValueError("--password needs --user")
    elif not token:
        token = os.environ.get("GRAFANA_TOKEN") or None
    credential = credential_from(token=token, user=args.user, password=password)
    load_dashboards(args.dashboards_dir or default_dashboards_dir())  # bad --dir: said first
    if args.grafana_url.startswith(("http://", "https://")):
        try:  # before importing the HTTP client: an absent Grafana is said at once
            check_reachable(args.grafana_url, args.timeout)
        except GrafanaUnreachable as exc:
            print(f"prepwatch: cannot reach Grafana at {args.grafana_url}: {exc}", file=sys.stderr)
            return 1
    try:
        from grafana_client.client import GrafanaException
    except ImportError:
        print("prepwatch: `dashboards push` needs grafana-client: "
              "pip install 'prepwatch[grafana]'", file=sys.stderr)
        return 2

    try:
        results = push_dashboards(
            args.grafana_url, credential, folder=args.folder, directory=args.dashboards_dir,
            timeout=args.timeout,
        )
    except GrafanaException as exc:
        hint = " (check --token or --user/--password)" if exc.status_code in (401, 403) else ""
        print(f"prepwatch: Grafana refused: {exc.message}{hint}", file=sys.stderr)
        return 1
    except OSError as exc:  # niquests' connection errors are OSErrors
        if isinstance(exc, FileNotFoundError):
            raise
        reason = str(exc) if isinstance(exc, GrafanaUnreachable) else connection_reason(exc)
        print(f"prepwatch: cannot reach Grafana at {args.grafana_url}: {reason}", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r.action:9} {r.title} ({r.uid}) {r.url}")
    return 0
