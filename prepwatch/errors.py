"""Faults inside prepwatch are counted, logged once, and never reach the training loop."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from prepwatch.metrics.registry import Registry

log = logging.getLogger("prepwatch")


class ErrorSink:
    """Counts faults in ``prepwatch_internal_errors_total{component}``; logs each kind once."""

    def __init__(self, registry: Registry) -> None:
        self._family = registry.counter(
            "prepwatch_internal_errors_total",
            "Faults inside prepwatch that were survived (the training job went on).",
            ["component"],
        )
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def precreate(self, *components: str) -> None:
        for component in components:
            self._family.labels(component)

    def report(self, component: str, exc: BaseException) -> None:
        try:
            with self._lock:
                self._family.labels(component).inc()
                key = (component, type(exc).__name__)
                first = key not in self._seen
                self._seen.add(key)
            if first:
                log.warning(
                    "prepwatch: %s failed (%s: %s); the job goes on. Counted in "
                    "prepwatch_internal_errors_total{component=%r}; later %s errors here "
                    "are counted, not logged.",
                    component, type(exc).__name__, exc, component, type(exc).__name__,
                    exc_info=exc,
                )
        except Exception:  # pragma: no cover - reporting must never raise
            pass

    def count(self, component: str) -> float:
        """Faults counted so far for ``component`` (for tests and status lines)."""
        child = dict(self._family.children()).get((component,))
        return child.value if child is not None else 0.0  # type: ignore[attr-defined]

    def survive(self, component: str) -> Survive:
        """A reusable ``with`` block: an exception inside is reported under ``component``
        and swallowed, so the training loop goes on. Cheap enough for a per-step call
        (no allocation per use: create it once, enter it every step)."""
        return Survive(self, component)

    def count_from(self, component: str, read: Callable[[], float]) -> None:
        """Export ``component``'s fault count from ``read()`` at scrape time: for faults
        counted elsewhere (DataLoader workers count theirs in shared memory)."""
        self._family.labels(component).set_function(read)  # type: ignore[attr-defined]


class Survive:
    """Context manager returned by :meth:`ErrorSink.survive`."""

    __slots__ = ("_sink", "_component")

    def __init__(self, sink: ErrorSink, component: str) -> None:
        self._sink = sink
        self._component = component

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        self._sink.report(self._component, exc)
        return True
