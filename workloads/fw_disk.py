"""fw_disk: paths and the destination's disk: containment, free space, mount type, what its failure means.

Standard library only.
"""
from __future__ import annotations

import errno
import os

# errors of the destination itself: the run stops (exit 3) instead of recording every item as failed
FATAL_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.ENOTCONN, errno.EDQUOT, errno.ESTALE, errno.EIO}
DISK_FULL_BELOW = 4 << 20            # bytes: a destination with less free space than this counts as full
NAME_MAX = 255                       # bytes in one file name (Linux, and over sshfs)


def inside(real: str, top: str) -> bool:
    """Is the real path ``real`` the folder ``top`` or below it?"""
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def free_bytes(path: str) -> int | None:
    """Bytes free for an unprivileged writer on the filesystem of ``path`` (over sshfs: the head's), or None."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def fs_type(path: str) -> str | None:
    """The filesystem type of the mount that holds ``path`` (``fuse.sshfs`` for the fleet's shared disk)."""
    real, best, kind = os.path.realpath(path), "", None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mp = fields[4].encode().decode("unicode_escape")
                if inside(real, mp) and len(mp) >= len(best):
                    best, kind = mp, right.split()[0]
    except OSError:
        return None
    return kind


def destination_failure(exc: OSError, dst: str, what: str = "") -> str:
    """One line for an error of the destination itself.  A full disk says so: ENOSPC/EDQUOT, or EIO with
    (almost) no free space left, which is how sshfs reports the head's full disk (as "shared disk full on the
    head")."""
    free = free_bytes(dst)
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT) or (
        exc.errno == errno.EIO and free is not None and free < DISK_FULL_BELOW)
    detail = f"{what}: " if what else ""
    if full:
        where = "shared disk full on the head" if fs_type(dst) == "fuse.sshfs" else "destination disk full"
        return f"{where}: {detail}{free if free is not None else 'unknown'} bytes free below {dst} " \
               f"({exc.strerror or exc})"
    return f"destination failed: {detail}{type(exc).__name__}: {exc}"
