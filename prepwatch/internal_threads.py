"""prepwatch's own threads, marked so the open hook never counts their opens as the dataset's.

A leaf module: the exporter and the samplers mark their threads without importing the
hot-path hooks (the torch-free agent must not load worker code).
"""

from __future__ import annotations

import threading

_internal_threads: set[int] = set()
_get_ident = threading.get_ident


def mark_internal_thread() -> None:
    """Call in prepwatch's own threads: the open hook then ignores their opens (psutil
    reading /proc, the exporter serving artifacts), which are not the dataset's."""
    _internal_threads.add(_get_ident())


def unmark_internal_thread() -> None:
    """Call when such a thread ends (thread ids are reused)."""
    _internal_threads.discard(_get_ident())
