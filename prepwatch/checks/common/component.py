"""The contract every capability component keeps, and that :meth:`Watch.stop` relies on.

A component is created on first use by its ``Watch`` method with the shared
:class:`~prepwatch.context.Context`; its per-step entry points are its own (predictions
and targets, image batches, clips: one signature for all would erase their types), and
they never raise runtime faults into the loop (those are counted under the component's
name). What every component offers beside them is the pair below.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Component(Protocol):
    """What :class:`prepwatch.Watch` needs of a capability component."""

    def flush(self, timeout: float = 30.0) -> bool:
        """Finish pending work (background reductions, device copies, files being
        written) and export it; True when all of it was done within ``timeout`` seconds."""
        ...

    def close(self) -> None:
        """Flush what can be flushed, stop background threads, release hooks. Idempotent;
        never raises runtime faults (they are counted)."""
        ...
