"""Directories and files another local user must not be able to plant or redirect.

The default state directory lives in /tmp when ``$XDG_RUNTIME_DIR`` is unset, so another
user can create it first. Like OpenSSH (``StrictModes``) and systemd (``RuntimeDirectory=``)
we refuse a directory that is not ours or that others can write, instead of using it: an
attacker's ``ranks/`` would let them redirect our writes through symlinks and serve forged
ranks. Files we create there are opened with ``O_NOFOLLOW | O_EXCL`` as a second line.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path


class UnsafeDirectoryError(PermissionError):
    """The directory is owned by someone else or writable by others; the message says the fix."""


def _user(uid: int) -> str:
    try:
        return f"{uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return str(uid)


def check_private_dir(path: Path, option: str, owners: tuple[int, ...] = ()) -> None:
    """Raise :class:`UnsafeDirectoryError` unless ``path`` is a directory owned by this user
    (or one of ``owners``) and not writable by group or others. A symlink is judged by its
    own owner first: someone else's link to our directory is still someone else's."""
    me = os.geteuid()
    allowed = (me, *owners)
    link = os.lstat(path)
    st = os.stat(path)
    problem = None
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in allowed:
        problem = f"is a symlink owned by uid {_user(link.st_uid)}"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid not in allowed:
        problem = f"is owned by uid {_user(st.st_uid)}"
    elif st.st_mode & 0o022:
        who = {0o022: "group and others", 0o020: "group", 0o002: "others"}[st.st_mode & 0o022]
        problem = f"is writable by {who}"
    if problem is not None:
        raise UnsafeDirectoryError(
            f"prepwatch: refusing state directory {path}: it {problem} (owner uid "
            f"{_user(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):04o}); it must belong to uid "
            f"{_user(me)} and not be writable by group or others. Another local user may have "
            f"created it: remove it (as its owner or root), or pass another with {option}"
        )


def private_dir(path: Path, option: str) -> Path:
    """Create ``path`` (0700) if missing, then :func:`check_private_dir` it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(
            f"prepwatch: state directory {path} cannot be created ({exc.strerror}); pass another "
            f"with {option}"
        ) from None
    check_private_dir(path, option)
    return path


def create_new(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file that must not exist yet; never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes) -> None:
    """Atomically put ``data`` at ``path``: a fresh temporary (an old or planted one is
    unlinked, not followed), then rename over the target (rename replaces a symlink itself)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    create_new(tmp, data)
    os.replace(tmp, path)
