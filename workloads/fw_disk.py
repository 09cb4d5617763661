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
# errors of a mount that stopped answering (never an item's fault); EIO only on a network mount (on a local disk
# it is a bad sector of one file), and only when the disk is not full (sshfs reports a full head as EIO too)
MOUNT_ERRNOS = {errno.ENOTCONN, errno.ECONNABORTED, errno.ESTALE, errno.ETIMEDOUT, errno.EHOSTUNREACH}
NETWORK_FS = ("fuse.sshfs", "nfs", "nfs4", "cifs", "smb3", "fuse.rclone", "fuse.gcsfuse", "fuse.s3fs")


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


def mount_oserror(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc`` (itself, or what it was raised from or during, e.g. a BadInput("unreadable")
    made from an OSError) when its errno is one of a mount that stopped answering: ENOTCONN & co, or EIO."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and (exc.errno in MOUNT_ERRNOS or exc.errno == errno.EIO):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def on_network_fs(path: str) -> bool:
    kind = fs_type(path) or ""
    return kind in NETWORK_FS or kind.startswith("fuse.sshfs")


def mount_lost(exc: BaseException, path: str) -> str | None:
    """One line ("mount lost: Transport endpoint is not connected") when ``exc`` comes from a mount that stopped
    answering below ``path``, else None.  ENOTCONN & co always are; EIO is only on a network mount whose disk is
    not full (a local disk's EIO is one bad file; a full head over sshfs is "disk full", exit 3)."""
    err = mount_oserror(exc)
    if err is None:
        return None
    if err.errno == errno.EIO:
        if not on_network_fs(path):
            return None
        free = free_bytes(path)
        if free is not None and free < DISK_FULL_BELOW:
            return None
    return f"mount lost: {err.strerror or os.strerror(err.errno)}"


def destination_error(exc: OSError, dst: str, what: str = ""):
    """The exception to raise for an error of the destination: ``MountLost`` when its mount stopped answering,
    else ``DestinationError`` (disk full, read-only...)."""
    from fw_errors import DestinationError, MountLost
    lost = mount_lost(exc, dst)
    if lost:
        return MountLost(f"{lost} ({what + ': ' if what else ''}{exc.filename or dst})")
    return DestinationError(destination_failure(exc, dst, what))
