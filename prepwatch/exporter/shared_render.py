"""Concurrent scrapes share one render.

Fifty scrapers hitting a training process' endpoint at once would each render the whole
registry while holding the GIL the training loop needs. A scrape that arrives while other
scrape is being served is given the body rendered for the same request less than
``max_age`` seconds ago, or waits for the render already running (single flight). A scrape
alone on the server always renders afresh, so a sequential reader never sees an old value.
"Alone" counts scrapes in flight, not open connections: a connection that has sent its
response but not yet closed (or an idle keep-alive one) does not make the next scrape share.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Hashable

DEFAULT_MAX_AGE_S = 0.5
DEFAULT_MAX_RATE = 20.0  # shared responses per second, all connections together


class SharedRender:
    def __init__(self, max_age: float = DEFAULT_MAX_AGE_S, max_rate: float = DEFAULT_MAX_RATE) -> None:
        self.max_age = max_age
        self._interval = 1.0 / max_rate
        self._next_slot = 0.0
        self.renders = 0  # bodies actually rendered (for tests and the benchmark)
        self._lock = threading.Lock()
        self._bodies: dict[Hashable, tuple[float, bytes]] = {}
        self._running: dict[Hashable, threading.Event] = {}
        self._in_flight = 0

    def get(self, key: Hashable, render: Callable[[], bytes]) -> bytes:
        """``render()``'s body, or a fresh enough one for ``key`` while other scrapes run."""
        with self._lock:
            share = self._in_flight > 0
            self._in_flight += 1
        try:
            if not share:  # alone: nothing runs, so this render leads any that arrive during it
                with self._lock:
                    self._running[key] = threading.Event()
                return self._lead(key, render)
            return self._shared(key, render)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _shared(self, key: Hashable, render: Callable[[], bytes]) -> bytes:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
        if slot > now:
            time.sleep(slot - now)
        with self._lock:
            cached = self._fresh(key)
            if cached is not None:
                return cached
            running = self._running.get(key)
            if running is None:
                self._running[key] = threading.Event()
        if running is not None:
            running.wait(self.max_age * 10)
            with self._lock:
                cached = self._fresh(key)
            return cached if cached is not None else self._render(key, render)
        return self._lead(key, render)

    def _lead(self, key: Hashable, render: Callable[[], bytes]) -> bytes:
        try:
            return self._render(key, render)
        finally:
            with self._lock:
                self._running.pop(key).set()

    def _fresh(self, key: Hashable) -> bytes | None:
        entry = self._bodies.get(key)
        if entry is not None and time.monotonic() - entry[0] < self.max_age:
            return entry[1]
        return None

    def _render(self, key: Hashable, render: Callable[[], bytes]) -> bytes:
        started = time.monotonic()
        body = render()
        with self._lock:
            self.renders += 1
            self._bodies[key] = (started, body)
        return body
