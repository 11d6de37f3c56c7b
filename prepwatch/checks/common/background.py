"""One daemon thread per component that does the heavy part of a check off the training loop.

Input capture reduces sampled batches and the box monitor renders overlays here. The
loop only hands work over: ``submit`` never blocks; when the queue is full the item is
dropped and counted, because falling behind must cost the check, never the job.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class BackgroundWorker(Generic[T]):
    """A bounded queue drained by one lazily started daemon thread.

    ``handle(item)`` runs on the thread; an exception there goes to ``on_error`` and the
    thread goes on with the next item.
    """

    def __init__(
        self, name: str, handle: Callable[[T], Any], *, capacity: int,
        on_error: Callable[[BaseException], None],
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.name = name
        self._handle = handle
        self._on_error = on_error
        self._queue: queue.Queue[tuple[T] | None] = queue.Queue(maxsize=capacity)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self.dropped = 0

    def submit(self, item: T) -> bool:
        """Queue ``item`` for the thread; False (counted in ``dropped``) when full or closed."""
        if self._closed:
            return False
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    thread.start()
                    self._thread = thread
        try:
            self._queue.put_nowait((item,))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _run(self) -> None:
        while True:
            boxed = self._queue.get()
            try:
                if boxed is None:
                    return
                self._handle(boxed[0])
            except Exception as exc:
                self._on_error(exc)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted item is handled; False when ``timeout`` ran out."""
        if self._thread is None:
            return True
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=waiter, name=f"{self.name}-flush", daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued (up to ``timeout``), then stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        thread.join(timeout)
