"""What every component gets: where to put metrics, where to report faults, who we are."""

from __future__ import annotations

from dataclasses import dataclass

from prepwatch.errors import ErrorSink
from prepwatch.identity import Identity
from prepwatch.metrics.registry import Registry


@dataclass
class Context:
    registry: Registry
    errors: ErrorSink
    identity: Identity

    @classmethod
    def create(cls, identity: Identity | None = None) -> Context:
        registry = Registry()
        errors = ErrorSink(registry)
        registry.on_collect_error = errors.report
        return cls(registry=registry, errors=errors, identity=identity or Identity.from_env())
