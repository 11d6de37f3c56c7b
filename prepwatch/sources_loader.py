"""Start the node sources (GPU, host) if the sources package provides them."""

from __future__ import annotations

from typing import Any, Callable

from prepwatch.context import Context


def start_sources(ctx: Context, *, pids: Callable[[], list[int]], interval: float) -> list[Any]:
    """Background samplers for GPU and host; each returned object has ``close()``."""
    try:
        from prepwatch.sources import start_sources as start
    except ImportError:
        return []
    try:
        return list(start(ctx, pids=pids, interval=interval))
    except Exception as exc:
        ctx.errors.report("sources", exc)
        return []
