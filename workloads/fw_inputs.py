"""fw_inputs: the items' side: listing the source once, and reading a source file safely.

An item's source file that is a symlink out of ``--src`` is not read (``symlink-outside-src``) unless
``--follow-links``; a link to nothing is ``broken-symlink``; a FIFO, a folder or an empty file is a BadInput,
never a hang.  Standard library only.
"""
from __future__ import annotations

import os
import stat
import sys

from fw_disk import inside
import fw_faults
from fw_errors import BadInput


def list_files(src: str, extensions, *, follow_dir_links: bool = False) -> list[str]:
    """Sorted '/'-separated relative paths under src whose name ends with one of ``extensions`` (lower case,
    with the dot), whatever their type: directories named like images, FIFOs and broken symlinks are items too
    (they fail as bad inputs).  Dot-files and dot-folders are skipped; symlinked folders are not entered; an
    unreadable sub-folder is skipped with a warning on stderr (an unreadable --src raises OSError)."""
    exts = tuple(e.lower() for e in extensions)
    found: list[str] = []
    stack = [("", src)]
    while stack:
        rel, path = stack.pop()
        try:
            it = os.scandir(path)
        except OSError as e:
            if not rel:                        # the source itself: the run cannot proceed
                raise
            print(f"fleetwork: warning: skipping folder {rel!r}: {e.strerror or e}", file=sys.stderr)
            continue
        with it:
            for entry in it:
                name = entry.name
                if name.startswith("."):
                    continue
                relname = rel + name
                if name.lower().endswith(exts):
                    found.append(relname)
                try:
                    is_dir = entry.is_dir(follow_symlinks=follow_dir_links)
                except OSError:
                    is_dir = False
                if is_dir:
                    stack.append((relname + "/", entry.path))
    found.sort()
    return found


def check_regular_file(path: str) -> int:
    """Open ``path`` for reading without ever blocking; return the fd, or raise BadInput with the reason
    (broken-symlink, missing, not-a-regular-file, empty, unreadable)."""
    try:
        fw_faults.mount_down(path)            # test-only: a mount that died ($FLEETBOOK_FAULT_MOUNT_DOWN)
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise BadInput("broken-symlink", f"symlink to {os.readlink(path)!r} points nowhere") from None
        raise BadInput("missing", "the file vanished") from None
    except PermissionError as e:
        raise BadInput("unreadable", str(e)) from None
    except OSError as e:
        raise BadInput("unreadable", str(e)) from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("directory" if stat.S_ISDIR(st.st_mode) else "fifo" if stat.S_ISFIFO(st.st_mode)
                else "socket" if stat.S_ISSOCK(st.st_mode) else "device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "special file")
        raise BadInput("not-a-regular-file", f"a {kind}, not a file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except PermissionError as e:
        raise BadInput("unreadable", str(e)) from None
    except OSError as e:
        raise BadInput("unreadable", str(e)) from None
    st = os.fstat(fd)                          # the name may have been swapped since the stat above
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BadInput("not-a-regular-file", "not a file")
    if st.st_size == 0:
        os.close(fd)
        raise BadInput("empty", "0 bytes")
    return fd


_REAL_DIRS: dict[str, str] = {}


def _real_dir(path: str) -> str:
    """realpath of a folder, remembered (the folders of a run's items do not change kind during the run)."""
    real = _REAL_DIRS.get(path)
    if real is None:
        if len(_REAL_DIRS) > 10_000:
            _REAL_DIRS.clear()
        real = _REAL_DIRS[path] = os.path.realpath(path)
    return real


def check_source(src: str, rel: str, follow_links: bool = False) -> str:
    """The path of the source file ``rel`` below ``src``, or BadInput: ``symlink-outside-src`` when a symlink (the
    file itself or a folder on the way) leads outside ``src`` (unless ``follow_links``), ``outside-src`` when the
    name itself leaves ``src`` (``..``, an absolute path), ``broken-symlink`` for a link to nothing.  Links that
    stay inside ``src`` are followed.  Costs one lstat per item (plus a realpath of each new folder)."""
    path = os.path.join(src, rel)
    top = _real_dir(src)
    plain = not os.path.isabs(rel) and ".." not in rel.split("/")
    try:
        link = stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:                            # missing or unreadable: the reader says which
        link = False
    if plain and not link and inside(_real_dir(os.path.dirname(path)), top):
        return path
    try:
        real = os.path.realpath(path)
    except OSError as e:                       # sshfs will not read a link that leaves the mount (EPERM)
        if follow_links:
            return path
        raise BadInput("symlink-outside-src", f"{rel!r} is a symlink whose target cannot be resolved here "
                                              f"({e.strerror or e}): it leaves the disk --src is on") from None
    if not inside(real, top):
        if not plain:
            raise BadInput("outside-src", f"{rel!r} names a file outside --src")
        if not follow_links:
            raise BadInput("symlink-outside-src", f"{rel!r} leads to {real!r}, outside --src "
                                                  "(pass --follow-links to read such files)")
    if link and not os.path.exists(path):
        raise BadInput("broken-symlink", f"symlink to {os.readlink(path)!r} points nowhere")
    return path


def check_sources(workload, item: str, src: str, opts) -> None:
    """``check_source`` for every source file of ``item`` (``Workload.source_files``)."""
    for rel in workload.source_files(item, opts):
        check_source(src, rel, bool(getattr(opts, "follow_links", False)))


def read_bytes(path: str) -> bytes:
    """The bytes of the source file ``path`` (BadInput when it is not a readable regular file); the bytes a
    ``prefetch`` of it already read, when there are."""
    ahead = _AHEAD.pop(path, None)
    if ahead is not None:
        try:
            return ahead.result()
        except Exception:  # noqa: BLE001 - read it again here, where its error is raised and recorded
            pass
    return _read_now(path)


def _read_now(path: str) -> bytes:
    fd = check_regular_file(path)
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read()
        except OSError as e:
            raise BadInput("unreadable", str(e)) from None


# ------------------------------------------------------------------------------------------------ prefetch
# While an item computes, one thread reads the next item's source files (issue 15: over sshfs a read waits on
# a round trip through ssh and the head; the CPU meanwhile does the work).  At most AHEAD files are held.
AHEAD = 4
_AHEAD: dict = {}           # path -> Future of its bytes
_POOL: list = []


def prefetch(src: str, rels, follow_links: bool = False) -> None:
    """Start reading the files ``rels`` below ``src`` (checked by ``check_source`` first) in the background;
    ``read_bytes`` of the same path takes the bytes.  ``$FLEETBOOK_PREFETCH=0``: never."""
    if os.environ.get("FLEETBOOK_PREFETCH", "1") == "0":
        return
    if not _POOL:
        import concurrent.futures as cf
        _POOL.append(cf.ThreadPoolExecutor(1, thread_name_prefix="fleetwork-prefetch"))
    for rel in rels:
        path = os.path.join(src, rel)
        if path in _AHEAD:
            continue
        while len(_AHEAD) >= AHEAD:                   # not taken (the item was skipped or failed): let it go
            _AHEAD.pop(next(iter(_AHEAD))).cancel()
        _AHEAD[path] = _POOL[0].submit(_checked_read, src, rel, follow_links)


def _after_fork_in_child() -> None:
    """A forked pool worker inherits the runner's executor without its thread: a future submitted to it would
    never run (the worker would wait forever in ``read_bytes``).  The child starts its own on first use."""
    _POOL.clear()
    _AHEAD.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def forget_prefetched() -> None:
    """Drop whatever was read ahead and not taken (the end of a list of items)."""
    while _AHEAD:
        _AHEAD.pop(next(iter(_AHEAD))).cancel()


def _checked_read(src: str, rel: str, follow_links: bool) -> bytes:
    return _read_now(check_source(src, rel, follow_links))
