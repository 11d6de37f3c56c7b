"""A minimal Alertmanager webhook receiver: prints each notification, keeps them in memory.

Run beside Alertmanager (docker-compose.yml does) to see what would page someone:

    python deploy/webhook/receiver.py --host 127.0.0.1 --port 9099

Standard library only, so it runs in a bare python image. The end-to-end tests import
``make_server`` from this file to receive the real notifications.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

Sink = Callable[[dict[str, Any], float], None]


def describe(payload: dict[str, Any]) -> list[str]:
    """One readable line per alert of an Alertmanager webhook payload."""
    lines = []
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        ann = alert.get("annotations", {})
        where = " ".join(
            f"{k}={labels[k]}" for k in ("run", "rank", "instance") if k in labels
        )
        lines.append(
            f"{alert.get('status', '?').upper()} {labels.get('alertname', '?')} "
            f"[{labels.get('severity', '?')}] {where}: {ann.get('summary', '')} "
            f"{ann.get('runbook_url', '')}".rstrip()
        )
    return lines


class _Handler(BaseHTTPRequestHandler):
    sink: Sink

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            payload = json.loads(body)
        except ValueError:
            self.send_response(400)
            self.end_headers()
            return
        self.sink(payload, time.time())
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # notifications are printed by the sink; no access log


def make_server(host: str, port: int, sink: Sink) -> ThreadingHTTPServer:
    """An HTTP server calling ``sink(payload, received_unix_time)`` for every POST."""
    handler = type("Handler", (_Handler,), {"sink": staticmethod(sink)})
    return ThreadingHTTPServer((host, port), handler)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    return thread


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9099)
    args = parser.parse_args(argv)

    def sink(payload: dict[str, Any], _received: float) -> None:
        for line in describe(payload):
            print(line, flush=True)

    server = make_server(args.host, args.port, sink)
    print(f"webhook receiver on http://{args.host}:{args.port}/alerts", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
