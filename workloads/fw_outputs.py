"""fw_outputs: how outputs reach the destination, and what a walk of it finds.  Standard library only.

Every output is written to a temp file in the same folder (``.<name>.tmp-<host>-<pid>-<rand>``, the name
shortened to ``<start>~<hash>`` when the whole would not fit in NAME_MAX bytes) and renamed; the outputs already
present are found with ONE recursive ``os.scandir`` walk (``scan``), which also finds the temp files that
``sweep_temps`` removes when their owner is a dead process of this host.
"""
from __future__ import annotations

import io
import json
import os
import random
import socket

import fw_faults
from fw_disk import NAME_MAX
from fw_shards import item_hash

TMP_MARK = ".tmp-"
LEFTOVER_TEMPS: set[str] = set()     # temp files of this process that could not be removed (a dropped mount)
HOST = socket.gethostname()


# --------------------------------------------------------------------------------------------------- writing
def temp_name(final_path: str) -> str:
    """``.<base>.tmp-<host>-<pid>-<rand>`` next to ``final_path``; when that would pass NAME_MAX bytes (a valid
    output name of 200-255 bytes), ``<base>`` becomes its first bytes + ``~`` + 12 hex of its sha1, so the
    owner part that ``parse_temp`` and the sweep read stays whole."""
    folder, base = os.path.split(final_path)
    owner = f"{TMP_MARK}{HOST}-{os.getpid()}-{random.getrandbits(32):08x}"
    name = f".{base}{owner}"
    if len(os.fsencode(name)) > NAME_MAX:
        room = NAME_MAX - len(os.fsencode(owner)) - 14       # ".", "~" and 12 hex digits
        start = base[:room]
        while len(os.fsencode(start)) > room:
            start = start[:-1]
        name = f".{start}~{item_hash(base)[:12]}{owner}"
    return os.path.join(folder, name)


_MADE: set[str] = set()     # folders this process made or found (remembered: no stat of them per output)


def _open_temp(path: str) -> tuple[str, int]:
    """Create the temp file of ``path`` (O_EXCL), making its folder first only when it is missing: a folder
    this process already saw costs no stat (over sshfs every create or rename in a folder invalidates its
    attributes, so ``makedirs(exist_ok=True)`` would cost one round trip per output)."""
    folder = os.path.dirname(path) or "."
    if folder not in _MADE:
        os.makedirs(folder, exist_ok=True)
        if len(_MADE) > 10_000:
            _MADE.clear()
        _MADE.add(folder)
    tmp = temp_name(path)
    try:
        return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:          # the folder went away since (removed by the head): make it again
        os.makedirs(folder, exist_ok=True)
        return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)


def atomic_write(path: str, data, *, fault: bool = True) -> None:
    """Write ``data`` (bytes, or a callable taking a binary file object) to ``path`` via temp + ``os.replace``.

    The temp file lives in the same folder (so the rename is atomic, also over sshfs) and is named after its
    owner (host, pid) so that a later run can sweep it when the owner is dead.  A callable writes into memory
    first and the whole output goes out in one ``write`` (over sshfs each small write of e.g. ``np.savez``
    would be a round trip of its own)."""
    if callable(data):
        buf = io.BytesIO()
        data(buf)
        data = buf.getbuffer()
    if fault:
        fw_faults.mount_down(path)            # test-only: a mount that died ($FLEETBOOK_FAULT_MOUNT_DOWN)
    tmp, fd = _open_temp(path)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fault:
                fw_faults.fault("mid-write", fd)
        finally:
            os.close(fd)
        if fault:
            fw_faults.fault("after-tmp-write")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        except OSError:                 # its mount dropped: the runner removes it once the mount is back
            LEFTOVER_TEMPS.add(tmp)
        raise


def write_json(path: str, obj, *, fault: bool = False) -> None:
    # ensure_ascii: item ids from undecodable file names carry surrogates, which only escape cleanly
    atomic_write(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode(), fault=fault)


def write_json_if_can(folder: str | None, name: str, obj) -> None:
    """``folder/name`` (the folder made first), or nothing when there is no folder or it cannot be written:
    for state files that go to several places, one of which may be a mount that failed."""
    if not folder:
        return
    try:
        os.makedirs(folder, exist_ok=True)
        write_json(os.path.join(folder, name), obj)
    except OSError:
        pass


# --------------------------------------------------------------------------------------------------- scanning
def parse_temp(name: str) -> tuple[str, int] | None:
    """``.<base>.tmp-<host>-<pid>-<rand>`` -> (host, pid) or None."""
    if not name.startswith(".") or TMP_MARK not in name:
        return None
    owner = name[name.rfind(TMP_MARK) + len(TMP_MARK):]
    parts = owner.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def scan(dst: str) -> tuple[set[str], list[str]]:
    """One recursive scandir walk: (relative output paths, absolute temp paths). No stat beyond d_type."""
    outputs: set[str] = set()
    temps: list[str] = []
    stack = [("", dst)]
    while stack:
        rel, path = stack.pop()
        try:
            it = os.scandir(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with it:
            for entry in it:
                name = entry.name
                if name.startswith("."):
                    if parse_temp(name):
                        temps.append(entry.path)
                    continue
                relname = rel + name
                if entry.is_dir(follow_symlinks=False):
                    stack.append((relname + "/", entry.path))
                else:
                    outputs.add(relname)
    return outputs, temps


def scan_outputs(dst: str) -> set[str]:
    """Relative paths ('/'-separated) of every file under dst, skipping dot-files, dot-folders and temps."""
    return scan(dst)[0]


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def pid_alive(pid: int, since: float | None = None) -> bool:
    """Is ``pid`` a live (non-zombie) process of this host that started before ``since`` (epoch seconds)?"""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return False
    except OSError:
        fields = None
    if fields is not None:
        if fields[0] in (b"Z", b"X"):
            return False
        boot = _boot_time()
        if since is not None and boot is not None:
            started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
            if started > since + 2:          # the pid was reused after the temp file was written
                return False
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temps(paths: list[str]) -> int:
    """Remove the temp files (from ``scan``) whose owner is a dead process of THIS host; returns how many."""
    removed = 0
    for path in paths:
        owner = parse_temp(os.path.basename(path))
        if not owner or owner[0] != HOST or owner[1] == os.getpid():
            continue
        try:
            mtime = os.lstat(path).st_mtime
        except FileNotFoundError:
            continue
        if pid_alive(owner[1], since=mtime):
            continue
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed

