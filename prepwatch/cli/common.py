"""Options shared by the commands that serve metrics."""

from __future__ import annotations

import argparse
from typing import Optional


def add_serve_options(parser: argparse.ArgumentParser, default_port: int = 9400) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="address to serve /metrics on (default 127.0.0.1; 0.0.0.0 exposes it to the network)",
    )
    parser.add_argument("--port", type=int, default=default_port, help=f"port (default {default_port})")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="GPU/host sampling period in seconds (default 1)"
    )
    parser.add_argument("--basic-auth", metavar="USER:PASSWORD", help="require HTTP basic auth")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", metavar="FILE", help="private key for --tls-cert")


def serve_kwargs(args: argparse.Namespace) -> dict:
    auth: Optional[tuple[str, str]] = None
    if args.basic_auth:
        user, sep, password = args.basic_auth.partition(":")
        if not sep or not user or not password:
            raise ValueError("--basic-auth must be USER:PASSWORD")
        auth = (user, password)
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        tls = (args.tls_cert, args.tls_key)
    if args.interval <= 0:
        raise ValueError(f"--interval must be > 0 seconds, got {args.interval}")
    return {
        "host": args.host, "port": args.port, "sample_interval": args.interval,
        "basic_auth": auth, "tls": tls,
    }
