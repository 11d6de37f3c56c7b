"""Read one rank's snapshot without trusting the rank.

A rank socket in ``ranks/`` is believed only when the process listening on it runs as the
agent's user or root (SO_PEERCRED, checked by the kernel, not by a file anyone could
write). The whole read has one deadline, so a rank that sends a byte every second cannot
hold a scrape, and one size limit, so a rank cannot make the agent hold a gigabyte.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import Iterator

MAX_SNAPSHOT_BYTES = 32 << 20  # a full job (1000 classes x 2 splits, 8 GPUs) is ~1 MiB
RECV_BYTES = 256 << 10
_UCRED = struct.Struct("3i")  # pid, uid, gid


class RankDropped(Exception):
    """This rank is left out of this scrape; ``reason`` is a short, bounded label value."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def peer_uid(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a connected Unix socket."""
    pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid


def rank_chunks(path: Path, timeout: float, max_bytes: int = MAX_SNAPSHOT_BYTES) -> Iterator[bytes]:
    """The bytes a rank sends, as they arrive, or :class:`RankDropped` (``timeout``,
    ``foreign_peer``, ``too_large``). Connection errors propagate: the caller decides
    whether the rank died."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except socket.timeout:
            raise RankDropped("timeout", f"{path.name} did not accept within {timeout:g}s") from None
        pid, uid = peer_uid(sock)
        if uid not in (os.geteuid(), 0):
            raise RankDropped(
                "foreign_peer",
                f"{path} is served by pid {pid} of uid {uid}, not this agent's user "
                f"({os.geteuid()}) or root: ignored",
            )
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RankDropped("timeout", f"{path.name} did not send its snapshot within {timeout:g}s")
            sock.settimeout(left)
            try:
                chunk = sock.recv(RECV_BYTES)
            except socket.timeout:
                raise RankDropped(
                    "timeout", f"{path.name} did not send its snapshot within {timeout:g}s"
                ) from None
            if not chunk:
                return
            size += len(chunk)
            if size > max_bytes:
                raise RankDropped("too_large", f"{path.name} sent more than {max_bytes} bytes")
            yield chunk
