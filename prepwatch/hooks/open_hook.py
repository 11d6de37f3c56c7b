"""File opens and reads done by dataset code, timed where they happen (opt-in).

A small-file metadata storm shows as many opens per second, few bytes per open and
a fat tail of open latency; that is what these instruments record, into this
process' worker-stats row (a DataLoader worker's row in shared memory, or the main
process' row; see prepwatch/hooks/worker_stats.py). Exported as
``prepwatch_file_open_seconds`` (histogram), ``prepwatch_file_opens_total`` and
``prepwatch_read_bytes_total``; and, per file read, its open-to-close time
(``prepwatch_file_read_seconds``) and the bytes read from it
(``prepwatch_file_read_bytes``), both histograms recorded when the file is closed: a
storm whose cost is in the read (network storage, cold cache), not the open, shows
there. Two ways in:

* ``timed_open(path, mode)``: a drop-in for ``open`` in your own dataset code.
* ``instrument_open()``: replaces ``builtins.open`` and ``io.open`` in this process
  (and, through fork, in DataLoader workers started afterwards), so library code you
  cannot edit (``PIL.Image.open(path)``, ``np.load(path)``, ``Path.read_bytes()``) is
  timed too. Only read-only opens of paths are recorded (not writes, not file
  descriptors, not prepwatch's own threads), so checkpoints and logs stay out; it
  costs ~0.15 us per open while prepwatch is not active in the process.

Both cost ~1.5 us of CPU per file opened and closed, ~2 us with a read, on top of the
file's own cost (bench/bench_sources.py --io, instrumentation alone) and never change
what the caller gets beyond a thin wrapper that counts bytes: reads go through a
:class:`CountingFile` whose other attributes are the real file's (``fileno()``,
``seek()``, ``name``...). Bytes read through ``fileno()`` (mmap, ``np.fromfile``) are
not counted; text-mode files count characters.

For per-stage timing of your own read/decode/transform code use ``prepwatch.stage``::

    with prepwatch.stage("read"):
        raw = f.read()
"""

from __future__ import annotations

import builtins
import io
import threading
import time
from bisect import bisect_left as _bisect
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Optional

from prepwatch.hooks import worker_recorder as _wr
from prepwatch.internal_threads import _get_ident, _internal_threads
from prepwatch.metrics.buckets import IO_BUCKETS as _IO_BOUNDS

_clock = time.perf_counter
# Cells of the row (prepwatch/hooks/worker_recorder.py) the per-file path writes itself.
_OPEN, _READ, _BYTES = _wr.FILE_OPEN_BASE, _wr.FILE_READ_BASE, _wr.FILE_BYTES_BASE
_SUM, _READ_BYTES = _wr.SUM_AT, _wr.READ_BYTES_AT
_BYTES_BUCKET = _wr.FILE_BYTES_BUCKET_BY_BITS
_recorder = _wr.recorder
_bare_open = io.open  # the real open, whatever is patched later
_new = object.__new__
_READ_ONLY = frozenset({"r", "rb", "br", "rt", "tr"})  # the usual read-only modes, at once

# The per-file path (open, reads, close) has 2 us for all of it (bench/bench_sources.py
# --io), and a write into the row or a call made from C (__enter__, __exit__, __del__)
# costs ~0.05 us. So the path writes the row's cells itself (layout and cell indices:
# prepwatch/hooks/worker_recorder.py), and CountingFile has no __getattr__: defining one
# makes every ``self._x`` of the class an unspecialised lookup (~0.4 us a file). The real
# file's attributes are forwarded by name instead (_forward_file_attributes, below).


class CountingFile:
    """Wraps an open file; counts the bytes (characters, in text mode) read through it.

    At close (``close()``, ``with``, or garbage collection of a file never closed) the
    file's open-to-close time and the bytes read from it are recorded once: a slow read
    of a small file (network storage, cold cache) costs there, not in ``open()``. Every
    other attribute of an io file (``fileno()``, ``seek()``, ``name``...) is the real
    file's.
    """

    __slots__ = ("_f", "_cells", "_t0", "_n")

    def __init__(self, f: Any, rec: Any, t0: float = -1.0) -> None:
        self._f = f
        self._cells = rec.cells  # the recorder's row
        self._t0 = t0  # when open() was called; < 0 once recorded (or never to be)
        self._n = 0

    # reads: count what came back, for this file and in the process' counter
    def read(self, size: Optional[int] = -1, /) -> Any:
        data = self._f.read(size)
        n = len(data)
        self._n += n
        self._cells[_READ_BYTES] += n
        return data

    def read1(self, *args: Any) -> Any:
        data = self._f.read1(*args)
        n = len(data)
        self._n += n
        self._cells[_READ_BYTES] += n
        return data

    def readall(self) -> Any:
        data = self._f.readall()
        n = len(data)
        self._n += n
        self._cells[_READ_BYTES] += n
        return data

    def readinto(self, buffer: Any) -> Any:
        n = self._f.readinto(buffer)
        if n:
            self._n += n
            self._cells[_READ_BYTES] += n
        return n

    def readinto1(self, buffer: Any) -> Any:
        n = self._f.readinto1(buffer)
        if n:
            self._n += n
            self._cells[_READ_BYTES] += n
        return n

    def readline(self, *args: Any) -> Any:
        data = self._f.readline(*args)
        n = len(data)
        self._n += n
        self._cells[_READ_BYTES] += n
        return data

    def readlines(self, *args: Any) -> list[Any]:
        lines = self._f.readlines(*args)
        n = sum(len(line) for line in lines)
        self._n += n
        self._cells[_READ_BYTES] += n
        return lines

    def __iter__(self) -> CountingFile:
        return self

    def __next__(self) -> Any:
        line = next(self._f)
        n = len(line)
        self._n += n
        self._cells[_READ_BYTES] += n
        return line

    # context manager and lifecycle
    def __enter__(self) -> CountingFile:
        self._f.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:  # close(), in line: all that the io classes' __exit__ does
            self._f.close()
        finally:
            if self._t0 >= 0.0:
                self._closed()

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            if self._t0 >= 0.0:
                self._closed()

    def _closed(self) -> None:
        """Record the file's open-to-close time and the bytes read from it (once)."""
        s = _clock() - self._t0
        self._t0 = -1.0
        n = self._n
        cells = self._cells
        cells[_READ + _bisect(_IO_BOUNDS, s)] += 1.0
        cells[_READ + _SUM] += s
        cells[_BYTES + _BYTES_BUCKET[(n - 1).bit_length()]] += 1.0
        cells[_BYTES + _SUM] += n

    def __del__(self) -> None:
        # A file never closed: the real file closes with this wrapper. This call costs
        # each file ~0.1 us; a weakref.finalize per file costs more than 1 us.
        if self._t0 >= 0.0:
            try:
                self._closed()
            except Exception:
                pass

    @property
    def closed(self) -> bool:
        return self._f.closed

    @property
    def raw_file(self) -> Any:
        """The wrapped file object, for code that needs the real type."""
        return self._f

    if TYPE_CHECKING:  # for type checkers only: the forwarded attributes

        def __getattr__(self, name: str) -> Any: ...

    def __repr__(self) -> str:
        return f"<CountingFile {self._f!r}>"


def _forward_file_attributes() -> None:
    """Give CountingFile every other attribute of the files ``open`` returns, the real
    file's: a property per name (getting ``self._f.<name>`` in C), no __getattr__. One
    the wrapped file lacks raises AttributeError, as it would on the file itself."""
    names = {"name", "mode"}  # kept in instance dicts (FileIO's name, TextIOWrapper's mode)
    for cls in (io.FileIO, io.BufferedReader, io.TextIOWrapper):
        names.update(n for n in dir(cls) if not n.startswith("__"))
    for name in sorted(names - set(vars(CountingFile))):
        setattr(CountingFile, name, property(attrgetter("_f." + name)))


_forward_file_attributes()


def timed_open(
    file: Any,
    mode: str = "r",
    buffering: int = -1,
    encoding: Optional[str] = None,
    errors: Optional[str] = None,
    newline: Optional[str] = None,
    closefd: bool = True,
    opener: Any = None,
) -> Any:
    """``open()`` that records its latency and counts the bytes read from the result.

    Same arguments and errors as ``open``. A no-op wrapper (the plain file) while
    prepwatch is not active in this process. Every successful open is recorded,
    whatever the mode; bytes are counted for files opened for reading.
    """
    rec = _recorder()
    if rec is None:
        return _bare_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
    t0 = _clock()
    f = _bare_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
    s = _clock() - t0
    cells = rec.cells
    cells[_OPEN + _bisect(_IO_BOUNDS, s)] += 1.0  # the count of opens, too
    cells[_OPEN + _SUM] += s
    if mode not in _READ_ONLY and ("r" not in mode or "+" in mode):
        return f
    cf = _new(CountingFile)  # CountingFile(f, rec, t0), without the cost of __init__
    cf._f = f
    cf._cells = cells
    cf._t0 = t0
    cf._n = 0
    return cf


def _hooked_open(
    file: Any,
    mode: str = "r",
    buffering: int = -1,
    encoding: Optional[str] = None,
    errors: Optional[str] = None,
    newline: Optional[str] = None,
    closefd: bool = True,
    opener: Any = None,
) -> Any:
    rec = _recorder()
    if (
        rec is None or (mode not in _READ_ONLY and ("r" not in mode or "+" in mode))
        or type(file) is int or _get_ident() in _internal_threads
    ):
        return _bare_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
    t0 = _clock()
    f = _bare_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
    s = _clock() - t0
    cells = rec.cells
    cells[_OPEN + _bisect(_IO_BOUNDS, s)] += 1.0  # the count of opens, too
    cells[_OPEN + _SUM] += s
    cf = _new(CountingFile)  # as in timed_open
    cf._f = f
    cf._cells = cells
    cf._t0 = t0
    cf._n = 0
    return cf


_hook_lock = threading.Lock()
_hook_users = 0
_saved: dict[str, Any] = {}


class OpenHook:
    """Handle of one :func:`instrument_open` call; ``close()`` (or ``with``) undoes it."""

    def __init__(self) -> None:
        self._active = True

    def close(self) -> None:
        global _hook_users
        with _hook_lock:
            if not self._active:
                return
            self._active = False
            _hook_users -= 1
            if _hook_users == 0:
                # Put back only what is still ours: someone may have patched on top since.
                if builtins.open is _hooked_open:
                    builtins.open = _saved.get("builtins", _bare_open)
                if io.open is _hooked_open:
                    io.open = _saved.get("io", _bare_open)
                _saved.clear()

    def __enter__(self) -> OpenHook:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def instrument_open() -> OpenHook:
    """Time every read-only file open made in this process (and in workers forked later).

    Use once at start-up, before the DataLoader starts its workers::

        prepwatch.instrument_open()

    or for a scope: ``with prepwatch.instrument_open(): ...``. Calls nest: the hook
    goes away when the last handle closes. With the ``spawn`` or ``forkserver`` start
    methods workers do not inherit it: call it in ``worker_init_fn`` too (cheap and
    idempotent).
    """
    global _hook_users
    with _hook_lock:
        if _hook_users == 0:
            if builtins.open is not _hooked_open:
                _saved["builtins"] = builtins.open
                builtins.open = _hooked_open
            if io.open is not _hooked_open:
                _saved["io"] = io.open
                io.open = _hooked_open
        _hook_users += 1
    return OpenHook()


def open_hook_active() -> bool:
    return builtins.open is _hooked_open
