"""Read-only HTTP endpoint for /metrics and the artifacts prepwatch writes (overlays).

Built on the standard library's ThreadingHTTPServer and prometheus_client's encoders
(content negotiation, gzip). Binds 127.0.0.1 unless told otherwise; optional TLS and
basic auth use ``ssl`` and ``hmac.compare_digest``. Only GET and HEAD exist: nothing
here writes or executes anything.
"""

from __future__ import annotations

import base64
import errno
import gzip
import hmac
import json
import logging
import mimetypes
import ssl
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, unquote, urlparse

from prometheus_client.exposition import choose_encoder

from prepwatch.exporter.bounded_server import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_CONNECTIONS,
    BoundedHTTPServer,
)
from prepwatch.exporter.shared_render import SharedRender
from prepwatch.exporter.text import CONTENT_TYPE as TEXT_CONTENT_TYPE
from prepwatch.exporter.text import encode_text
from prepwatch.internal_threads import mark_internal_thread, unmark_internal_thread
from prepwatch.metrics.registry import LabelledView

log = logging.getLogger("prepwatch")

ARTIFACT_TYPES = {".png", ".json", ".txt"}
_GZIP_MAGIC = b"\x1f\x8b"


class PortInUseError(OSError):
    """The configured port is taken; the message names the port and the option."""


def validate_bind(host: str, port: int, option: str = "port") -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"{option} must be an integer in 0..65535 (0 = any free port), got {port!r}")
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty string such as '127.0.0.1', got {host!r}")


class MetricsServer:
    """Serves ``collector`` on /metrics; the server thread is a daemon."""

    def __init__(
        self,
        collector: Any,
        *,
        const_labels: Optional[dict[str, str]] = None,
        host: str = "127.0.0.1",
        port: int = 9400,
        artifacts_root: Optional[Path] = None,
        basic_auth: Optional[tuple[str, str]] = None,
        tls: Optional[tuple[str, str]] = None,
        port_option: str = "port=... (or --port / $PREPWATCH_PORT)",
        on_error: Optional[Callable[[str, BaseException], None]] = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> None:
        """``max_connections`` are served at once (more are refused at once), each within
        ``deadline_s`` for handshake, request and response."""
        validate_bind(host, port)
        self.collector = collector
        self.const_labels = dict(const_labels or {})
        self.artifacts_root = Path(artifacts_root) if artifacts_root else None
        self._auth = _auth_header(basic_auth) if basic_auth else None
        self._on_error = on_error
        self.renders = SharedRender()
        handler = _make_handler(self)
        context = None
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile=tls[0], keyfile=tls[1])
        try:
            self._httpd = BoundedHTTPServer(
                (host, port), handler, tls_context=context,
                max_connections=max_connections, deadline_s=deadline_s,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    exc.errno,
                    f"prepwatch: port {port} on {host} is already in use; choose another with "
                    f"{port_option}",
                ) from None
            raise
        self.scheme = "https" if context is not None else "http"
        self.host, self.port = self._httpd.server_address[:2]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="prepwatch-http", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"{self.scheme}://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def report(self, component: str, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(component, exc)
        else:
            log.warning("prepwatch: %s failed: %r", component, exc)

    def check_auth(self, header: Optional[str]) -> bool:
        if self._auth is None:
            return True
        return header is not None and hmac.compare_digest(header.encode(), self._auth.encode())


def _auth_header(basic_auth: tuple[str, str]) -> str:
    user, password = basic_auth
    if not user or not password:
        raise ValueError("basic_auth needs a non-empty (user, password)")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {token}"


def _make_handler(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "prepwatch"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            return  # scrapes every second would flood the job's stderr

        def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
            self._serve(head=True)

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            mark_internal_thread()  # reading artifacts is not the dataset's IO
            try:
                self._serve_marked(head)
            finally:
                unmark_internal_thread()

        def _serve_marked(self, head: bool) -> None:
            if not server.check_auth(self.headers.get("Authorization")):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="prepwatch"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            url = urlparse(self.path)
            try:
                if url.path in ("/metrics", "/"):
                    status, ctype, body = self._metrics(url.query)
                elif url.path == "/healthz":
                    status, ctype, body = 200, "text/plain", b"ok\n"
                elif url.path.startswith("/artifacts"):
                    status, ctype, body = self._artifact(unquote(url.path[len("/artifacts"):]))
                else:
                    status, ctype, body = 404, "text/plain", b"not found\n"
            except Exception as exc:
                server.report("http", exc)
                status, ctype, body = 500, "text/plain", b"internal error\n"
            gz = body[:2] == _GZIP_MAGIC if status == 200 and url.path in ("/metrics", "/") \
                else self._wants_gzip() and len(body) > 1024
            if gz and body[:2] != _GZIP_MAGIC:
                body = gzip.compress(body, compresslevel=3)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            if gz:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _wants_gzip(self) -> bool:
            return "gzip" in self.headers.get("Accept-Encoding", "")

        def _metrics(self, query: str) -> tuple[int, str, bytes]:
            """The exposition, gzipped when asked and over 1 KiB (the gzip magic says so)."""
            names = parse_qs(query).get("name[]")
            ctype, render = _renderer(server.collector, self.headers.get("Accept", ""),
                                      set(names) if names else None, server.const_labels)
            gz = self._wants_gzip()

            def final() -> bytes:
                body = render()
                return gzip.compress(body, compresslevel=3) if gz and len(body) > 1024 else body
            if names:  # filtered requests are rare and unbounded in variety: never shared
                return 200, ctype, final()
            return 200, ctype, server.renders.get((ctype, gz), final)

        def _artifact(self, rel: str) -> tuple[int, str, bytes]:
            root = server.artifacts_root
            if root is None:
                return 404, "text/plain", b"no artifacts\n"
            root = root.resolve()
            target = (root / rel.lstrip("/")).resolve()
            if root != target and root not in target.parents:
                return 404, "text/plain", b"not found\n"
            if target.is_dir():
                files = sorted(
                    str(p.relative_to(root)) for p in target.rglob("*")
                    if p.is_file() and p.suffix in ARTIFACT_TYPES
                )
                return 200, "application/json", json.dumps(files).encode()
            if not target.is_file() or target.suffix not in ARTIFACT_TYPES:
                return 404, "text/plain", b"not found\n"
            ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            return 200, ctype, target.read_bytes()

    return Handler


def _renderer(
    collector: Any, accept: str, names: Optional[set[str]], const_labels: dict[str, str]
) -> tuple[str, Callable[[], bytes]]:
    """(content type, render) for a scrape: the node agent's own text; else our text
    encoder, or prometheus_client's OpenMetrics one when the scraper prefers it."""
    render_text = getattr(collector, "render_text", None)
    if render_text is not None:  # the agent serves the text its ranks rendered, as text
        return TEXT_CONTENT_TYPE, lambda: render_text(names)
    if names:
        collector = _Restricted(collector, names)
    encoder, ctype = choose_encoder(accept)
    if ctype.startswith("text/plain"):
        return TEXT_CONTENT_TYPE, lambda: encode_text(collector, const_labels)
    if const_labels:  # OpenMetrics: prometheus_client's encoder, labels by copy
        collector = LabelledView(collector, const_labels)
    return ctype, lambda: encoder(collector)


class _Restricted:
    def __init__(self, collector: Any, names: set[str]) -> None:
        self._collector = collector
        self._names = names

    def collect(self) -> Any:
        for metric in self._collector.collect():
            if metric.name in self._names or any(s.name in self._names for s in metric.samples):
                yield metric
