"""An HTTP server that a slow, idle or abusive client cannot stall, and forked children
do not inherit.

The standard library's ThreadingHTTPServer handshakes TLS in its accept loop (one idle
TCP connection blocks every scrape), starts a thread per connection without limit and
keeps it as long as the client stays silent, and listens with a backlog of 5. Here:

* TLS is wrapped and handshaken in the connection's own thread;
* every connection has one deadline for the whole exchange (handshake, request,
  response): a single reaper thread shuts its socket down when it passes, so a client
  that sends one byte a second cannot hold a thread by resetting a per-read timeout;
* at most ``max_connections`` are served at once; beyond that a connection is closed at
  once (plain HTTP gets a 503 first), which costs the accept loop microseconds;
* the listen backlog is 128, so a burst of scrapers is queued by the kernel, not reset;
* forked children (DataLoader workers) close the listener and the open connections right
  after fork: a fork keeps every fd whatever its CLOEXEC flag, and a worker that outlives
  a SIGKILLed main process would otherwise hold the port.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
import weakref
from http.server import ThreadingHTTPServer
from typing import Any, Optional

DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_DEADLINE_S = 10.0
BACKLOG = 128
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
         b"Connection: close\r\n\r\n")

_servers: weakref.WeakSet[BoundedHTTPServer] = weakref.WeakSet()


def _close_in_child() -> None:
    for server in list(_servers):
        server.forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class BoundedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with TLS off the accept loop, deadlines and a connection cap."""

    request_queue_size = BACKLOG
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: Any,
        *,
        tls_context: Optional[ssl.SSLContext] = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> None:
        self.tls_context = tls_context
        self.max_connections = max_connections
        self.deadline_s = deadline_s
        self.refused = 0  # connections closed because max_connections were busy
        self._active: dict[socket.socket, float] = {}  # connection -> deadline (monotonic)
        self._cond = threading.Condition()
        self._closed = False
        super().__init__(address, handler)
        _servers.add(self)
        self._reaper = threading.Thread(target=self._reap, name="prepwatch-http-reaper", daemon=True)
        self._reaper.start()

    # -- accept loop: never blocks on a client -------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        with self._cond:
            busy = len(self._active) >= self.max_connections
            if not busy:
                self._active[request] = time.monotonic() + self.deadline_s
                self._cond.notify()
        if busy:
            self.refused += 1
            if self.tls_context is None:
                try:
                    request.setblocking(False)
                    request.send(_BUSY)
                except OSError:
                    pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def active_connections(self) -> int:
        with self._cond:
            return len(self._active)

    # -- the connection's own thread ---------------------------------------------------
    def process_request_thread(self, request: Any, client_address: Any) -> None:
        conn = request
        try:
            conn.settimeout(self.deadline_s)
            if self.tls_context is not None:
                conn = self.tls_context.wrap_socket(request, server_side=True)  # handshake here
            self.finish_request(conn, client_address)
        except Exception:
            pass  # a client that times out, resets or speaks garbage is not our fault
        finally:
            with self._cond:
                self._active.pop(request, None)
            self.shutdown_request(conn)

    def _reap(self) -> None:
        """Shut down connections past their deadline; sleeps while there are none."""
        with self._cond:
            while not self._closed:
                if not self._active:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                for conn, deadline in list(self._active.items()):
                    if deadline <= now:
                        try:
                            # On the fd itself: an SSLSocket wrapping it shares the fd, and a
                            # blocked read or handshake in the connection's thread returns.
                            socket.socket.shutdown(conn, socket.SHUT_RDWR)
                        except OSError:
                            pass
                        self._active[conn] = now + 3600.0  # shut once; its thread removes it
                soonest = min(self._active.values(), default=now + 60.0)
                self._cond.wait(max(0.05, soonest - now))

    # -- life cycle ----------------------------------------------------------------------
    def server_close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        super().server_close()

    def forget_after_fork(self) -> None:
        """In a forked child: close the inherited listener and connections (no threads here)."""
        self._closed = True
        self._cond = threading.Condition()  # the parent's lock may have been held at fork
        for sock in [self.socket, *self._active]:
            try:
                sock.close()
            except OSError:
                pass
        self._active = {}
