"""Ask whether a file's data is in the page cache without reading it (``mincore``).

The probe reports how much of a "cold" pass was already cached, so the question must
not change the answer. ``preadv2(RWF_NOWAIT)`` looks like a fit but is not one: on a
miss the kernel starts readahead before it says EAGAIN, so the question itself pulls
the file in, and on a fast device the page can arrive within the call and be reported
as cached (seen: 14% of freshly evicted files on a virtio disk). ``mincore`` on a
mapping that is never touched reads nothing.

Linux (since 5.2) answers ``mincore`` on a file mapping truly only to the file's owner,
a process that may write it, or one with CAP_FOWNER; to anyone else it says every page
is cached. A shared, read-only dataset is the usual case for the probe, so that answer
is "unknown" here, not "cached".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import sys
from functools import lru_cache
from typing import Any, Optional

_MAP_FAILED = ctypes.c_void_p(-1).value


@lru_cache(maxsize=1)
def _libc() -> Optional[Any]:
    """libc with mmap/mincore/munmap typed, or None where there is none to call."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def _kernel_answers(fd: int, owner: int) -> bool:
    """Would Linux tell this process the truth about ``fd``'s pages (see the module doc)?"""
    if not sys.platform.startswith("linux"):
        return True
    euid = os.geteuid()
    if euid in (0, owner):
        return True
    try:  # access() follows /proc's link to the file itself, with this process's ids
        return os.access(f"/proc/self/fd/{fd}", os.W_OK,
                         effective_ids=os.access in os.supports_effective_ids)
    except (OSError, ValueError):
        return False


def first_page_resident(fd: int) -> Optional[bool]:
    """Is the first page of the open file ``fd`` in the page cache? None when unknown.

    Unknown: an empty file, a file that cannot be mapped (pipes, some network
    filesystems), a file the kernel will not tell this process about (neither its
    owner nor allowed to write it), or a platform without mincore.
    """
    libc = _libc()
    if libc is None:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    if st.st_size == 0 or not _kernel_answers(fd, st.st_uid):
        return None
    length = mmap.PAGESIZE
    addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr is None or addr == _MAP_FAILED:
        return None
    try:
        vec = (ctypes.c_ubyte * 1)()
        if libc.mincore(addr, length, vec) != 0:
            return None
        return bool(vec[0] & 1)
    finally:
        libc.munmap(addr, length)
