"""Faults inside prepwatch are counted, logged once, and never reach the training loop."""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, Callable, TypeVar

from prepwatch.metrics.registry import Registry

log = logging.getLogger("prepwatch")
F = TypeVar("F", bound=Callable[..., Any])


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

    def guard(self, component: str, default: Any = None) -> Callable[[F], F]:
        """Decorator: exceptions become a counted fault and ``default`` is returned."""

        def wrap(fn: F) -> F:
            @functools.wraps(fn)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    self.report(component, exc)
                    return default

            return guarded  # type: ignore[return-value]

        return wrap
