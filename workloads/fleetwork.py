"""fleetwork: the one shared helper of the fleetbook workloads (standard library only).

A workload is a module in this folder that defines ``WORKLOAD = SomeWorkload(...)`` and ends with
``if __name__ == "__main__": sys.exit(fleetwork.main(WORKLOAD))``.  This module gives every workload the same
runner, so that one node (or a Dask task running one chunk) does its items the same way:

* items are listed once (``Workload.list_items``); outputs already present are found with ONE recursive
  ``os.scandir`` walk of the destination (``scan_outputs``), never a stat per item;
* ``--shard i/n``: first the items whose sha1(item) mod n == i, then help with the other shards in turn (i+1,
  i+2, ...), each taken from its end while its owner works from its start, re-checking just before each helped
  item that its output does not exist yet;
* every output is written to a temp file in the same folder (``.<name>.tmp-<host>-<pid>-<rand>``, the name
  shortened to ``<start>~<hash>`` when the whole would not fit in NAME_MAX bytes) and renamed; temp files of dead
  processes of this host are swept at start;
* an item's source file that is a symlink out of ``--src`` is not read (``symlink-outside-src``) unless
  ``--follow-links``; a link to nothing is ``broken-symlink``;
* a bad item raises ``BadInput(reason)``: it is recorded once in ``<dst>/.failed/<sha1(item)[:20]>.json`` and
  skipped by later runs unless ``--retry-failed``;
* ``--state DIR``: ``heartbeat.json`` every ~2 s and ``exit.json`` at the end;
* a process pool (``--workers``, ``--chunksize``, ``--start-method``) with defaults from this machine: its cores
  (``$FLEETBOOK_CORES``, else its CPUs) and its machine profile (``$FLEETBOOK_PROFILE``, ``profile.json`` beside
  the workloads, ``<repo>/.fleetbook/profile.json``), which is used only when it was measured on as many cores.

Exit codes of ``main``: 0 = every item is done or recorded as failed; 1 = some items are neither (e.g. a
helper node stopped early); 2 = the run cannot proceed (bad arguments, missing source, unwritable destination);
3 = the destination failed in the middle of the run (disk full, read-only, mount gone); 128+N = killed by signal N.
The last line on stdout is ``done=N skipped=N failed=N seconds=S items_per_s=R``.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import errno
import hashlib
import importlib.util
import io
import json
import math
import multiprocessing
import os
import random
import signal
import socket
import stat
import sys
import threading
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
FAILED_DIR = ".failed"
TMP_MARK = ".tmp-"
HOST = socket.gethostname()
DEFAULT_OVERHEAD_US = 126.0          # ProcessPoolExecutor per-task cost measured on a 2-core VM (DESIGN.md 4)
HEARTBEAT_EVERY = 2.0
STOP_GRACE = 10.0                    # seconds the chunks in flight may take to finish after SIGTERM
SUMMARY_KEYS = ("done", "skipped", "failed", "seconds", "items_per_s")
# errors of the destination itself: the run stops (exit 3) instead of recording every item as failed
FATAL_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.ENOTCONN, errno.EDQUOT, errno.ESTALE, errno.EIO}
DISK_FULL_BELOW = 4 << 20            # bytes: a destination with less free space than this counts as full
NAME_MAX = 255                       # bytes in one file name (Linux, and over sshfs)

# the head imports this module as ``workloads.fleetwork``; the workloads import it as ``fleetwork``:
# make both names one module so BadInput, Workload, ... are the same classes.
if __name__ != "fleetwork":
    sys.modules.setdefault("fleetwork", sys.modules[__name__])


# --------------------------------------------------------------------------------------------------- errors
class BadInput(Exception):
    """One item cannot be processed (bad file, wrong format, ...); recorded, never fatal for the run.

    ``reason`` is a short stable word (``empty``, ``truncated``, ``not-an-image``, ``decompression-bomb``,
    ``not-a-regular-file``, ``broken-symlink``, ``unreadable``, ``output-collision``...); ``detail`` is free text.
    """

    _fleetwork_bad_input = True

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class UsageError(Exception):
    """The run itself cannot proceed (exit 2, one line, no traceback)."""


class DestinationError(Exception):
    """The run cannot go on (destination full, read-only or gone; workers that keep dying): stop, exit 3."""


# --------------------------------------------------------------------------------------------------- helpers
def item_hash(item: str) -> str:
    return hashlib.sha1(item.encode("utf-8", "surrogateescape")).hexdigest()


def shard_of(item: str, n: int) -> int:
    """The stable shard of an item: sha1(item) mod n (the same on every machine and Python)."""
    return int(item_hash(item), 16) % n


def shard_order(todo: list, shard: tuple[int, int] | None) -> list[tuple[object, bool]]:
    """``(entry, helped)`` in the order a node works: its own shard first, then the other shards in turn
    (node i starts with shard i+1, so helpers spread out), each from its END: its owner works from the start,
    so owner and helper meet in the middle instead of doing the same items twice.  ``entry[0]`` is the item."""
    if not shard or shard[1] <= 1:
        return [(t, False) for t in todo]
    i, n = shard
    by_shard: dict[int, list] = {}
    for t in todo:
        by_shard.setdefault(shard_of(t[0], n), []).append(t)
    own = [(t, False) for t in by_shard.get(i, [])]
    return own + [(t, True) for k in range(1, n) for t in reversed(by_shard.get((i + k) % n, []))]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0-based i) -> (i, n); None -> None; anything else -> UsageError."""
    if text is None or text == "":
        return None
    try:
        i_s, n_s = text.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise UsageError(f"--shard must look like i/n, e.g. 0/4 (got {text!r})") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard i/n needs n >= 1 and 0 <= i < n (got {text!r})")
    return i, n


def choose_chunksize(n_items: int, workers: int, item_seconds: float | None,
                     per_task_overhead_us: float = DEFAULT_OVERHEAD_US) -> int:
    """Items per pool task.

    The smallest chunk whose per-task overhead is <= 5 % of its work (``overhead <= 0.05 * item_seconds *
    chunk``), capped so that every worker still gets at least 4 chunks (load balance, and a dead node loses
    little).  Unknown or zero item time counts as "very cheap": the cap decides.
    """
    n_items, workers = max(0, int(n_items)), max(1, int(workers))
    if n_items == 0:
        return 1
    cap = max(1, n_items // (4 * workers))
    overhead = max(0.0, float(per_task_overhead_us)) / 1e6
    if not item_seconds or item_seconds <= 0:
        return cap
    need = max(1, math.ceil(overhead / (0.05 * item_seconds) - 1e-9))
    return max(1, min(need, cap))


def load_profile() -> tuple[dict, str | None]:
    """The machine profile (dict, path) or ({}, None); see the module docstring for where it is looked for."""
    env = os.environ.get("FLEETBOOK_PROFILE")
    if env:                                   # set: that file only (a missing file means "no profile")
        candidates = [env]
    else:
        candidates = [os.path.join(HERE, "profile.json"),
                      os.path.join(os.path.dirname(HERE), ".fleetbook", "profile.json")]
    for path in candidates:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data, path
    return {}, None


def machine_cores() -> int:
    """The cores this machine counts as its own: ``$FLEETBOOK_CORES`` when set (a local fleet node shares the
    head's CPUs and counts ``local.cores_per_node``), else the CPUs this process may run on."""
    env = os.environ.get("FLEETBOOK_CORES", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def profile_fits(profile: dict | None) -> bool:
    """Was ``profile`` measured on a machine like this one?  Its ``cores`` (when it records them) must be this
    machine's: a profile made on a 2-core laptop says nothing about a 64-core node, nor the reverse."""
    if not profile:
        return False
    cores = profile.get("cores")
    return not isinstance(cores, int) or cores == machine_cores()


def default_start_method(profile: dict | None = None) -> str:
    methods = multiprocessing.get_all_start_methods()
    wanted = profile.get("start_method") if profile_fits(profile) else None
    if wanted in methods:
        return wanted
    return "fork" if "fork" in methods else methods[0]


def default_workers(profile: dict | None = None) -> int:
    """This machine's cores, or the profile's ``workers`` when the profile is this machine's (never the cores of
    the machine a profile was made on)."""
    wanted = profile.get("workers") if profile_fits(profile) else None
    if isinstance(wanted, int) and wanted > 0:
        return wanted
    return machine_cores()


# --------------------------------------------------------------------------------------------------- faults
_FAULT_COUNT = 0
_WORKER: dict = {}          # what a pool worker got from its runner (see _worker_init)


def _fault(point: str, fd: int | None = None) -> None:
    """Test-only: ``FLEETBOOK_FAULT=after-tmp-write|mid-write[:N|:P]`` kills this process (and its runner when in
    a pool worker) at the N-th output write (default 1) or with probability P (0 < P < 1) per write."""
    spec = os.environ.get("FLEETBOOK_FAULT")
    if not spec:
        return
    name, _, arg = spec.partition(":")
    if name != point:
        return
    global _FAULT_COUNT
    _FAULT_COUNT += 1
    if arg and "." in arg:
        rng = random.Random(f"{os.environ.get('FLEETBOOK_FAULT_SEED', '0')}:{os.getpid()}:{_FAULT_COUNT}")
        if rng.random() >= float(arg):
            return
    elif _FAULT_COUNT != (int(arg) if arg else 1):
        return
    if fd is not None:                      # leave a half-written temp file behind
        size = os.lseek(fd, 0, os.SEEK_END)
        os.ftruncate(fd, size // 2)
    runner = _WORKER.get("runner_pid")
    if runner and runner == os.getppid():
        os.kill(runner, signal.SIGKILL)        # the whole node dies, not just one worker
    os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------------------------------- writing
def temp_name(final_path: str) -> str:
    """``.<base>.tmp-<host>-<pid>-<rand>`` next to ``final_path``; when that would pass NAME_MAX bytes (a valid
    output name of 200-255 bytes), ``<base>`` becomes its first bytes + ``~`` + 12 hex of its sha1, so the
    owner part that ``_parse_temp`` and the sweep read stays whole."""
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


def atomic_write(path: str, data, *, fault: bool = True) -> None:
    """Write ``data`` (bytes, or a callable taking a binary file object) to ``path`` via temp + ``os.replace``.

    The temp file lives in the same folder (so the rename is atomic, also over sshfs) and is named after its
    owner (host, pid) so that a later run can sweep it when the owner is dead."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            if fault:
                _fault("mid-write", f.fileno())
        if fault:
            _fault("after-tmp-write")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: str, obj, *, fault: bool = False) -> None:
    # ensure_ascii: item ids from undecodable file names carry surrogates, which only escape cleanly
    atomic_write(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode(), fault=fault)


def free_bytes(path: str) -> int | None:
    """Bytes free for an unprivileged writer on the filesystem of ``path`` (over sshfs: the head's), or None."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _fs_type(path: str) -> str | None:
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
                if _inside(real, mp) and len(mp) >= len(best):
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
        where = "shared disk full on the head" if _fs_type(dst) == "fuse.sshfs" else "destination disk full"
        return f"{where}: {detail}{free if free is not None else 'unknown'} bytes free below {dst} " \
               f"({exc.strerror or exc})"
    return f"destination failed: {detail}{type(exc).__name__}: {exc}"


def failure_path(dst: str, item: str) -> str:
    return os.path.join(dst, FAILED_DIR, item_hash(item)[:20] + ".json")


def record_failure(dst: str, item: str, reason: str, error: str = "", node: str | None = None) -> None:
    """One atomic file per failed item (never an append to a shared file: dst may be an sshfs mount)."""
    write_json(failure_path(dst, item), {"item": item, "reason": reason, "error": error[:2000],
                                         "node": node or HOST, "time": time.time()})


def clear_failure(dst: str, item: str) -> None:
    try:
        os.unlink(failure_path(dst, item))
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------------------------------- scanning
def _parse_temp(name: str) -> tuple[str, int] | None:
    """``.<base>.tmp-<host>-<pid>-<rand>`` -> (host, pid) or None."""
    if not name.startswith(".") or TMP_MARK not in name:
        return None
    owner = name[name.rfind(TMP_MARK) + len(TMP_MARK):]
    parts = owner.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _scan(dst: str) -> tuple[set[str], list[str]]:
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
                    if _parse_temp(name):
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
    return _scan(dst)[0]


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
    """Remove the temp files (from ``_scan``) whose owner is a dead process of THIS host; returns how many."""
    removed = 0
    for path in paths:
        owner = _parse_temp(os.path.basename(path))
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


def _read_failed_dir(dst: str) -> tuple[dict[str, dict], list[str]]:
    """One scandir of ``<dst>/.failed``: (item -> record, temp files).  Neither the folder nor a record is
    read through a symlink (the head reads these as root, and anyone who can write the destination may have
    made one), nor is a record that is not a regular file or is bigger than 1 MB."""
    out: dict[str, dict] = {}
    temps: list[str] = []
    folder = os.path.join(dst, FAILED_DIR)
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:                         # missing, not a folder, or a symlink: no records
        return out, temps
    try:
        with os.scandir(dfd) as it:
            names = [e.name for e in it]
        for name in names:
            if name.startswith("."):
                if _parse_temp(name):
                    temps.append(os.path.join(folder, name))
                continue
            if not name.endswith(".json"):
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                             dir_fd=dfd)
            except OSError:
                continue
            with os.fdopen(fd, "rb") as f:
                try:
                    rec = json.loads(f.read(1 << 20)) if stat.S_ISREG(os.fstat(fd).st_mode) else None
                except (OSError, ValueError):
                    continue
            if isinstance(rec, dict) and isinstance(rec.get("item"), str):
                out[rec["item"]] = rec
    finally:
        os.close(dfd)
    return out, temps


def read_failures(dst: str) -> dict[str, dict]:
    """item -> failure record, from ``<dst>/.failed/*.json`` (one scandir; unreadable records are ignored)."""
    return _read_failed_dir(dst)[0]


def find_collisions(workload, items, opts) -> dict[str, str]:
    """loser -> winner for items that map to the same output: the lexicographically first item wins."""
    seen: dict[str, str] = {}
    losers: dict[str, str] = {}
    for item in sorted(items):
        out = workload.output_for(item, opts)
        if out in seen:
            losers[item] = seen[out]
        else:
            seen[out] = item
    return losers


def count_progress(workload, src: str, dst: str, opts, items: list[str] | None = None) -> dict:
    """{"total","done","failed","pending"} on a LOCAL disk: done = expected outputs present (collision losers
    never count as done), failed = failure records of items not done.  ``items``: the source's items when the
    caller listed them already (they do not change during a run; the outputs do)."""
    items = workload.list_items(src, opts) if items is None else items
    outputs = scan_outputs(dst)
    failures = read_failures(dst)
    losers = find_collisions(workload, items, opts)
    done = failed = 0
    for item in items:
        if item not in losers and workload.output_for(item, opts) in outputs:
            done += 1
        elif item in failures:
            failed += 1
    return {"total": len(items), "done": done, "failed": failed, "pending": len(items) - done - failed}


# --------------------------------------------------------------------------------------------------- listing
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


def _inside(real: str, top: str) -> bool:
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


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
    if plain and not link and _inside(_real_dir(os.path.dirname(path)), top):
        return path
    try:
        real = os.path.realpath(path)
    except OSError as e:                       # sshfs will not read a link that leaves the mount (EPERM)
        if follow_links:
            return path
        raise BadInput("symlink-outside-src", f"{rel!r} is a symlink whose target cannot be resolved here "
                                              f"({e.strerror or e}): it leaves the disk --src is on") from None
    if not _inside(real, top):
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
    fd = check_regular_file(path)
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read()
        except OSError as e:
            raise BadInput("unreadable", str(e)) from None


def open_image(path: str, *, draft: int | None = None, mode: str = "RGB"):
    """Decode an image safely with Pillow: first frame, EXIF orientation applied, converted to ``mode``
    (``RGB`` or ``L``; alpha composited on white; 16-bit scaled to 8-bit).  ``draft=N``: JPEGs are decoded at a
    reduced scale that keeps both sides >= N.  Every problem becomes BadInput; the decompression-bomb limit
    stays on and its warning (1x-2x the limit) counts as a failure too."""
    from PIL import Image, ImageOps  # optional dependency: only the image workloads need it

    data = read_bytes(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise BadInput("decompression-bomb", str(e)) from None
        except Image.UnidentifiedImageError:
            raise BadInput("not-an-image", "Pillow cannot identify this file") from None
        except Exception as e:  # noqa: BLE001 - any decoder failure is a property of the file
            raise BadInput("corrupt", f"{type(e).__name__}: {e}") from None
        try:
            if draft and img.format == "JPEG":
                img.draft("RGB" if img.mode not in ("CMYK", "L") else img.mode, (draft, draft))
            img.load()
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # noqa: BLE001 - a broken EXIF block: keep the pixels as stored
                pass
            return to_mode(img, mode)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise BadInput("decompression-bomb", str(e)) from None
        except MemoryError:
            raise BadInput("too-large", "out of memory while decoding") from None
        except Exception as e:  # noqa: BLE001
            text = f"{type(e).__name__}: {e}"
            raise BadInput("truncated" if "truncated" in text.lower() else "corrupt", text) from None


def to_mode(img, mode: str = "RGB"):
    """Pillow image of any mode -> ``RGB`` or ``L`` (alpha on white, 16/32-bit and float scaled)."""
    from PIL import Image

    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        lo, hi = img.getextrema() if img.mode == "I" else (0, 65535)
        if img.mode == "I" and hi <= 255 and lo >= 0:
            img = img.convert("L")
        else:
            img = img.convert("I").point(lambda v: v * (1 / 256.0)).convert("L")
    elif img.mode == "F":
        lo, hi = img.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = img.point(lambda v: (v - lo) * scale).convert("L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != mode:
        img = img.convert(mode)
    return img


# --------------------------------------------------------------------------------------------------- workload
class Workload:
    """Base class of a workload.  Subclasses set ``name`` and ``description`` and override ``list_items``,
    ``output_for`` and ``process``; ``add_arguments`` adds their own options; ``handle`` may take over the
    run for a special mode (e.g. ``--summarize``) by returning an exit code."""

    name = "workload"
    description = ""
    epilog = ""
    needs_src = True               # gridsearch: False (--src optional)
    item_seconds_hint: float | None = None   # known cost per item, skips the measurement for the chunk size

    def __init__(self, name: str | None = None, **attrs):
        if name:
            self.name = name
        for k, v in attrs.items():
            setattr(self, k, v)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"

    # ---- command line
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the workload's own options."""

    def parser(self) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(
            prog=f"{self.name}.py", description=self.description,
            epilog=(self.epilog + "\n\n" if self.epilog else "") + COMMON_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        g = p.add_argument_group("common fleetbook options")
        g.add_argument("--src", required=self.needs_src, default=None,
                       help="input folder (items are listed from it)" + ("" if self.needs_src else " (unused)"))
        g.add_argument("--dst", required=True, help="output folder (created if missing)")
        g.add_argument("--shard", metavar="i/n", default=None,
                       help="do the items with sha1(item) %% n == i first (0-based), then help with the rest")
        g.add_argument("--workers", type=int, default=None,
                       help="worker processes (default: this machine's cores: $FLEETBOOK_CORES, else the CPUs "
                            "this process may use)")
        g.add_argument("--threads", type=int, default=1,
                       help="items at once in each worker process, on threads: for items that wait on the "
                            "network (s3:// paths, a slow mount); 1 = none")
        g.add_argument("--chunksize", type=int, default=None,
                       help="items per pool task (default: chosen from the measured time per item)")
        g.add_argument("--start-method", choices=multiprocessing.get_all_start_methods(), default=None,
                       help="process start method (default: the profile's 'start_method' when the profile was "
                            "measured on this kind of machine, else fork)")
        g.add_argument("--state", metavar="DIR", default=None,
                       help="write DIR/heartbeat.json every ~2 s and DIR/exit.json at the end")
        g.add_argument("--node", default=None, help="node name for records and heartbeats (default: hostname)")
        g.add_argument("--retry-failed", action="store_true",
                       help="retry items that have a failure record in DST/.failed/")
        g.add_argument("--follow-links", action="store_true",
                       help="read source files through symlinks that lead outside --src (default: such an item "
                            "is recorded as failed, symlink-outside-src)")
        g.add_argument("--seed", type=int, default=0, help="seed for workloads that draw random numbers (gridsearch: random_state)")
        g.add_argument("--quiet", action="store_true", help="no progress bar and no config line")
        own = p.add_argument_group(f"{self.name} options")
        self.add_arguments(own)
        return p

    def parse_args(self, argv: list[str] | None) -> argparse.Namespace:
        return self.parser().parse_args(argv)

    def handle(self, opts) -> int | None:
        """Return an exit code to replace the normal run (special modes), or None."""
        return None

    def check(self, src: str | None, dst: str, opts) -> None:
        """Raise UsageError when the run cannot proceed (called before listing)."""
        if self.needs_src:
            if not src or not os.path.isdir(src):
                raise UsageError(f"source folder not found: {src}")
            rs, rd = os.path.realpath(src), os.path.realpath(dst)
            if rd == rs or rd.startswith(rs.rstrip(os.sep) + os.sep):
                raise UsageError(f"--dst must not be --src or inside it ({dst})")

    def setup_worker(self, opts) -> None:
        """Called once in each worker process (e.g. to cap library threads)."""

    # ---- items
    def list_items(self, src: str, opts) -> list[str]:
        raise NotImplementedError

    def source_files(self, item: str, opts) -> list[str]:
        """The files below --src that ``process`` reads for ``item`` (checked for links out of --src first)."""
        return []

    def output_for(self, item: str, opts) -> str:
        raise NotImplementedError

    def process(self, item: str, src: str, dst: str, opts) -> None:
        raise NotImplementedError


class FileWorkload(Workload):
    """A workload whose items are files under --src selected by extension, each with one output file."""

    extensions: tuple[str, ...] = ()
    out_ext = ".out"

    def list_items(self, src: str, opts) -> list[str]:
        return list_files(src, self.extensions)

    def output_for(self, item: str, opts) -> str:
        return os.path.splitext(item)[0] + self.out_ext

    def source_files(self, item: str, opts) -> list[str]:
        return [item]


COMMON_EPILOG = """\
runner behaviour (all workloads):
  outputs already in DST are found with one directory walk and skipped; each output is written to a temp file
  in its folder and renamed; a bad input is recorded once in DST/.failed/<hash>.json (skipped next time unless
  --retry-failed).  Exit 0 = every item done or recorded as failed, 2 = cannot start.  The last line on stdout
  is: done=N skipped=N failed=N seconds=S items_per_s=R.  --workers defaults to this machine's cores
  ($FLEETBOOK_CORES, else its CPUs); --start-method and --chunksize to the machine profile ($FLEETBOOK_PROFILE,
  profile.json beside this script, or <repo>/.fleetbook/profile.json) when it was measured on as many cores."""


def available() -> list[str]:
    """Names of the workloads in this folder: the modules that assign a top-level ``WORKLOAD`` (helpers such as
    fleetwork or storage.py are not workloads).  Reads the small source files; imports nothing."""
    names = []
    for entry in os.scandir(HERE):
        stem, ext = os.path.splitext(entry.name)
        if ext != ".py" or not stem.isidentifier() or stem.startswith("_") or stem == "fleetwork":
            continue
        try:
            with open(entry.path, encoding="utf-8", errors="replace") as f:
                if any(line.startswith(("WORKLOAD =", "WORKLOAD:")) for line in f):
                    names.append(stem)
        except OSError:
            continue
    return sorted(names)


def load(name: str) -> Workload:
    """Import ``workloads/<name>.py`` and return its ``WORKLOAD``; unknown name -> KeyError."""
    names = available()
    if name not in names:
        raise KeyError(f"unknown workload {name!r}; available: {', '.join(names) or 'none'}")
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    mod = sys.modules.get(name)
    if mod is None or os.path.dirname(os.path.abspath(getattr(mod, "__file__", "") or "")) != HERE:
        spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, name + ".py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    workload = getattr(mod, "WORKLOAD", None)
    if workload is None:
        raise ValueError(f"workloads/{name}.py defines no WORKLOAD")
    return workload


# --------------------------------------------------------------------------------------------------- running
def _is_bad_input(exc: BaseException) -> bool:
    return any(getattr(k, "_fleetwork_bad_input", False) for k in type(exc).__mro__)


def _do_item(workload, item, src, dst, opts, node, recheck: bool, had_record: bool):
    """-> (item, status, reason) with status done|skipped|failed; DestinationError for fatal dst errors."""
    if recheck and os.path.exists(os.path.join(dst, workload.output_for(item, opts))):
        return item, "skipped", None
    try:
        check_sources(workload, item, src, opts)
        workload.process(item, src, dst, opts)
    except Exception as e:  # noqa: BLE001 - an item never crashes the run
        if _is_bad_input(e):
            reason, detail = getattr(e, "reason", "bad-input"), getattr(e, "detail", str(e))
        elif isinstance(e, OSError) and e.errno in FATAL_ERRNOS:
            raise DestinationError(destination_failure(e, dst)) from None
        else:
            reason, detail = "error", f"{type(e).__name__}: {e}"
        try:
            record_failure(dst, item, reason, detail, node)
        except OSError as e2:
            raise DestinationError(destination_failure(e2, dst, "cannot write a failure record")) from None
        return item, "failed", reason
    if had_record:
        clear_failure(dst, item)
    return item, "done", None


def _die_with_parent(runner_pid: int) -> None:
    """Linux: this worker gets SIGKILL when its runner dies (else an orphan worker would wait forever on the
    pool's queue, holding the node's CPU, memory and the log's file descriptors)."""
    if os.getppid() != runner_pid:                 # forkserver: the OS parent is the fork server
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != runner_pid:                 # the runner died just before prctl
        os._exit(1)


def _worker_init(workload, src, dst, opts, node, runner_pid):
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the runner handles Ctrl-C and stops its workers
    _die_with_parent(runner_pid)
    _WORKER.update(workload=workload, src=src, dst=dst, opts=opts, node=node, runner_pid=runner_pid)
    workload.setup_worker(opts)


def _threaded(fn, tasks: list, threads: int):
    """``fn(task)`` for each task in order, ``threads`` at a time: for items that wait on the network (S3, a
    slow mount), where threads win over processes (see bench/test_threads.py)."""
    if threads <= 1:
        yield from map(fn, tasks)
        return
    with cf.ThreadPoolExecutor(threads, thread_name_prefix="fleetwork-io") as pool:
        step = threads * 4
        for k in range(0, len(tasks), step):
            yield from pool.map(fn, tasks[k:k + step])


def _worker_chunk(tasks):
    w = _WORKER
    t0 = time.perf_counter()
    results = list(_threaded(lambda t: _do_item(w["workload"], t[0], w["src"], w["dst"], w["opts"], w["node"],
                                                t[1], t[2]), tasks, getattr(w["opts"], "threads", 1) or 1))
    return results, time.perf_counter() - t0


class _Progress:
    """Counters shared by the run loop, the heartbeat thread and the TTY bar."""

    def __init__(self, total, node, state_dir, bar):
        self.total, self.node, self.state_dir, self.bar = total, node, state_dir, bar
        self.done = self.skipped = self.failed = 0
        self.error: str | None = None          # why the run stopped (the destination failed), once it did
        self.started = time.time()
        self.t0 = time.perf_counter()
        self._last_bar = 0.0
        self._stop = threading.Event()
        self._thread = None

    def snapshot(self) -> dict:
        elapsed = max(1e-9, time.perf_counter() - self.t0)
        return {"node": self.node, "pid": os.getpid(), "host": HOST, "total": self.total, "done": self.done,
                "skipped": self.skipped, "failed": self.failed, "rate_per_s": round(self.done / elapsed, 3),
                "started_at": self.started, "updated_at": time.time(), **({"error": self.error} if self.error else {})}

    def beat(self):
        if self.state_dir:
            try:
                write_json(os.path.join(self.state_dir, "heartbeat.json"), self.snapshot())
            except OSError:
                pass

    def start(self):
        self.beat()

    def start_thread(self):
        """Heartbeats while items run (started after the pool has forked its workers)."""
        if self.state_dir and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fleetwork-heartbeat", daemon=True)
            self._thread.start()

    def _loop(self):
        while not self._stop.wait(HEARTBEAT_EVERY):
            self.beat()

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.beat()
        if self.bar:
            self.draw(force=True)
            sys.stdout.write("\n")
            sys.stdout.flush()

    def add(self, status):
        setattr(self, status, getattr(self, status) + 1)
        if self.bar:
            self.draw()

    def draw(self, force=False):
        now = time.perf_counter()
        if not force and now - self._last_bar < 0.1:
            return
        self._last_bar = now
        n = self.done + self.skipped + self.failed
        width = 30
        fill = int(width * n / self.total) if self.total else width
        rate = self.done / max(1e-9, now - self.t0)
        sys.stdout.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {n}/{self.total} done={self.done} "
                         f"skipped={self.skipped} failed={self.failed} {rate:.1f}/s ")
        sys.stdout.flush()


def _log(opts, text):
    if not getattr(opts, "quiet", False):
        print(f"fleetwork: {text}", file=sys.stderr, flush=True)


def run_items(workload, items, src, dst, opts, *, state_dir=None, node=None, shard=None,
              collisions=None, progress_bar=None, known=None) -> dict:
    """Process ``items`` (skip-if-done, shard order, pool, failure records, heartbeats) and return the summary
    ``{"done","skipped","failed","seconds","items_per_s", ...}``.  Used by the CLI and by an engine for one
    chunk.  ``shard`` defaults to ``opts.shard``; ``collisions`` (loser -> winner, see find_collisions) to the
    collisions among ``items`` (an engine that splits a list should pass the collisions of the whole list).
    ``known=(outputs, failures)``: what the caller already listed (an engine that listed the destination once
    for all its chunks); then this chunk does not walk the destination again, and checks each item's output
    just before doing it instead (one stat per item)."""
    t_start = time.perf_counter()
    node = node or getattr(opts, "node", None) or HOST
    state_dir = state_dir or getattr(opts, "state", None)
    shard = shard if shard is not None else parse_shard(getattr(opts, "shard", None))
    retry = bool(getattr(opts, "retry_failed", False))
    profile, profile_path = load_profile()
    ignored = None
    if profile and not profile_fits(profile):   # made on another machine: its choices are not this one's
        _log(opts, f"profile {profile_path} was measured on {profile.get('cores')} cores and this machine has "
                   f"{machine_cores()}: not used")
        profile, profile_path, ignored = {}, None, profile_path
    if state_dir:
        os.makedirs(state_dir, exist_ok=True)
    os.makedirs(os.path.join(dst, FAILED_DIR), exist_ok=True)

    items = list(items)
    if known is None:
        outputs, temps = _scan(dst)                      # ONE walk of the destination
        failures, failed_temps = _read_failed_dir(dst)
        sweep_temps(temps + failed_temps)
    else:
        outputs, failures = set(known[0]), dict(known[1])
    if collisions is None:
        collisions = find_collisions(workload, items, opts)

    prog = _Progress(len(items), node, state_dir,
                     sys.stdout.isatty() if progress_bar is None else progress_bar)
    known_failed = 0
    todo: list[tuple[str, bool]] = []                    # (item, had a failure record)
    for item in items:
        if item in collisions:
            if item in failures and not retry:
                known_failed += 1
                prog.failed += 1
            else:
                record_failure(dst, item, "output-collision",
                               f"output {workload.output_for(item, opts)!r} already comes from {collisions[item]!r} "
                               "(the lexicographically first item wins)", node)
                prog.failed += 1
        elif workload.output_for(item, opts) in outputs:
            prog.skipped += 1
        elif item in failures and not retry:
            known_failed += 1
            prog.failed += 1
        else:
            todo.append((item, item in failures))

    tasks = [(it, helped or known is not None, had) for (it, had), helped in shard_order(todo, shard)]

    workers = getattr(opts, "workers", None) or default_workers(profile)
    workers = max(1, min(workers, len(tasks))) if tasks else 1
    if multiprocessing.current_process().daemon:     # e.g. inside a Dask/multiprocessing worker: no children
        workers = 1
    method = getattr(opts, "start_method", None) or default_start_method(profile)
    overhead = profile.get("per_task_overhead_us")
    overhead = float(overhead) if isinstance(overhead, (int, float)) and overhead >= 0 else DEFAULT_OVERHEAD_US
    chunksize = getattr(opts, "chunksize", None) or profile.get("chunksize")
    if not isinstance(chunksize, int) or chunksize < 1:
        chunksize = None
    info = {"workers": workers, "start_method": method if workers > 1 else "inline",
            "chunksize": chunksize, "profile": profile_path, "profile_ignored": ignored, "total": len(items),
            "todo": len(tasks), "known_failed": known_failed}
    prog.start()
    code_error = None
    try:
        if workers == 1:
            info["chunksize"] = 1
            _log(opts, f"{workload.name}: {len(items)} items, {len(tasks)} to do, workers=1 (inline), "
                       f"profile={profile_path}")
            workload.setup_worker(opts)
            prog.start_thread()
            threads = getattr(opts, "threads", 1) or 1
            for result in _threaded(lambda t: _do_item(workload, t[0], src, dst, opts, node, t[1], t[2]), tasks,
                                    threads):
                _check_stop()
                prog.add(result[1])
        else:
            _run_pool(workload, tasks, src, dst, opts, node, prog, workers, method, chunksize, overhead, info)
    except DestinationError as e:
        code_error = prog.error = str(e)
    except _Stopped:
        pass
    finally:
        prog.stop()
    seconds = time.perf_counter() - t_start
    summary = {"done": prog.done, "skipped": prog.skipped, "failed": prog.failed,
               "seconds": round(seconds, 3), "items_per_s": round(prog.done / seconds, 2) if seconds else 0.0}
    summary.update(info)
    summary["complete"] = summary["done"] + summary["skipped"] + summary["failed"] == len(items) and not code_error
    if code_error:
        summary["error"] = code_error
    if _STOP["signal"] is not None:
        summary["stopped"] = _STOP["signal"]
        summary["complete"] = False
    return summary


class _PoolBroke(Exception):
    """A worker died: the items that were in flight (one of them probably killed it)."""

    def __init__(self, suspects):
        super().__init__(f"{len(suspects)} item(s) in flight")
        self.suspects = suspects


def _kill_pool(pool) -> None:
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            proc.terminate()
        except Exception:  # noqa: BLE001
            pass
    pool.shutdown(wait=False, cancel_futures=True)


def _run_pool(workload, tasks, src, dst, opts, node, prog, workers, method, chunksize, overhead, info):
    """Run ``tasks`` on a process pool.  When a worker dies (segfault in a decoder, OOM killer), the items that
    were in flight are re-run one at a time in a one-worker pool: the one that kills its worker again is
    recorded as failed (``worker-crashed``) and the rest of the run goes on."""
    ctx = multiprocessing.get_context(method)
    initargs = (workload, src, dst, opts, node, os.getpid())
    finished: set[str] = set()

    def new_pool(n):
        return cf.ProcessPoolExecutor(n, mp_context=ctx, initializer=_worker_init, initargs=initargs)

    def take(results):
        for item, status, _reason in results:
            if item not in finished:
                finished.add(item)
                prog.add(status)

    def one_pass(todo, chunksize):
        pool = new_pool(workers)
        inflight: dict = {}
        try:
            pos = 0
            if not chunksize:
                if workload.item_seconds_hint:
                    chunksize = choose_chunksize(len(todo), workers, workload.item_seconds_hint, overhead)
                else:                                  # measure: the first items one per task
                    probe = todo[:2 * workers]         # the first item of each worker also pays its imports
                    pos = len(probe)
                    futs = [pool.submit(_worker_chunk, [t]) for t in probe]
                    inflight.update((f, [t]) for f, t in zip(futs, probe))
                    prog.start_thread()
                    times = []
                    for fut in futs:
                        while not cf.wait([fut], timeout=0.5).done:
                            _check_stop()
                        results, secs = fut.result()
                        del inflight[fut]
                        times.append(secs)
                        take(results)
                    per_item = min(times)
                    chunksize = choose_chunksize(len(todo) - pos, workers, per_item, overhead)
                    info["item_seconds"] = round(per_item, 6)
            info["chunksize"] = chunksize
            _log(opts, f"{workload.name}: {prog.total} items, {len(todo)} to do, workers={workers} "
                       f"start_method={method} chunksize={chunksize} per_task_overhead_us={overhead} "
                       f"profile={info['profile']}")
            chunks = iter([todo[k:k + chunksize] for k in range(pos, len(todo), chunksize)])
            for chunk in chunks:                       # keep a bounded number of chunks in flight
                inflight[pool.submit(_worker_chunk, chunk)] = chunk
                if len(inflight) >= workers * 3:
                    break
            prog.start_thread()
            while inflight:
                _check_stop()
                done, _ = cf.wait(list(inflight), timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    results, _secs = fut.result()
                    del inflight[fut]
                    take(results)
                    nxt = next(chunks, None)
                    if nxt is not None:
                        inflight[pool.submit(_worker_chunk, nxt)] = nxt
        except BrokenProcessPool:
            _kill_pool(pool)
            raise _PoolBroke([t for chunk in inflight.values() for t in chunk if t[0] not in finished]) from None
        except _Stopped:                       # let the chunks in flight finish (bounded), drop the rest
            for fut in inflight:
                fut.cancel()
            done, _ = cf.wait([f for f in inflight if not f.cancelled()], timeout=STOP_GRACE)
            for fut in done:
                try:
                    take(fut.result()[0])
                except Exception:  # noqa: BLE001 - e.g. the workers got the signal too
                    pass
            _kill_pool(pool)
            raise
        except BaseException:
            _kill_pool(pool)
            raise
        pool.shutdown(wait=True)
        return chunksize

    def isolate(suspects):
        pool = None
        try:
            for item, _recheck, had in suspects:
                _check_stop()
                if item in finished:
                    continue
                pool = pool or new_pool(1)
                try:
                    take(pool.submit(_worker_chunk, [(item, True, had)]).result()[0])
                except BrokenProcessPool:
                    _kill_pool(pool)
                    pool = None
                    record_failure(dst, item, "worker-crashed", "the worker process died while processing this "
                                   "item (a crash in a decoder, or killed, e.g. out of memory)", node)
                    take([(item, "failed", "worker-crashed")])
        except BaseException:
            if pool:
                _kill_pool(pool)
            raise
        if pool:
            pool.shutdown(wait=True)

    todo = list(tasks)
    crashes = 0
    while todo:
        try:
            chunksize = one_pass(todo, chunksize)
            break
        except _PoolBroke as broke:
            _check_stop()                      # workers killed by the stop signal: not their items' fault
            crashes += 1
            if not broke.suspects or crashes > 100:
                raise DestinationError(f"worker processes keep dying ({crashes} times)") from None
            _log(opts, f"{workload.name}: a worker died; re-running its {len(broke.suspects)} in-flight item(s) "
                       "one at a time")
            isolate(broke.suspects)
            todo = [t for t in todo if t[0] not in finished]
            chunksize = chunksize or info.get("chunksize") or 1
    info["worker_crashes"] = crashes


_STOP: dict = {"signal": None}


def _on_stop_signal(signum, frame):
    """SIGTERM/SIGHUP/SIGINT: finish the items in progress, stop, write exit.json (code 128+N).  A second signal
    leaves at once.  (No exception is raised into arbitrary code: an import or a write is never cut half-way.)"""
    if _STOP["signal"] is not None:
        os._exit(128 + signum)
    _STOP["signal"] = signum


class _Stopped(Exception):
    pass


def _check_stop():
    if _STOP["signal"] is not None:
        raise _Stopped()


def main(workload, argv=None) -> int:
    """The command line of a workload: parse, check, list, run, print the summary; returns the exit code."""
    try:
        opts = workload.parse_args(argv)
    except SystemExit as e:                           # --help (0) or argparse's usage error (2)
        return e.code if isinstance(e.code, int) else 2
    state_dir = getattr(opts, "state", None)
    prog_name = workload.name

    def finish(code, summary=None, error=None):
        if state_dir:
            try:
                os.makedirs(state_dir, exist_ok=True)
                rec = {"code": code, "summary": summary or {}, "finished_at": time.time()}
                error = error or (summary or {}).get("error")      # e.g. "shared disk full on the head: ..."
                if error:
                    rec["error"] = error
                write_json(os.path.join(state_dir, "exit.json"), rec)
            except OSError:
                pass
        return code

    if "://" in str(opts.src or "") or "://" in str(opts.dst or ""):
        # object-store --src/--dst (s3://bucket/prefix): the same run, through workloads/storage.py (issue 6)
        if HERE not in sys.path:
            sys.path.insert(0, HERE)
        import storage
        return finish(storage.run_cli(workload, opts))

    try:
        shard = parse_shard(opts.shard)
        if opts.workers is not None and opts.workers < 1:
            raise UsageError("--workers must be >= 1")
        if opts.chunksize is not None and opts.chunksize < 1:
            raise UsageError("--chunksize must be >= 1")
        if opts.threads < 1:
            raise UsageError("--threads must be >= 1")
        special = workload.handle(opts)
        if special is not None:
            return finish(special)
        workload.check(opts.src, opts.dst, opts)
        try:
            os.makedirs(os.path.join(opts.dst, FAILED_DIR), exist_ok=True)
            # a folder, not a file: on a FUSE mount close() is asynchronous, and a file unlinked right after it
            # would linger as .fuse_hidden* among the outputs
            probe = temp_name(os.path.join(opts.dst, ".probe"))
            os.mkdir(probe)
            os.rmdir(probe)
        except OSError as e:
            why = destination_failure(e, opts.dst, "not writable")
            raise UsageError(why if "disk full" in why else f"destination not writable: {opts.dst} "
                                                             f"({e.strerror or e})") from None
        try:
            items = workload.list_items(opts.src, opts)
        except BadInput as e:
            raise UsageError(str(e)) from None
        except OSError as e:
            raise UsageError(f"cannot list the source {opts.src}: {e.strerror or e}") from None
    except UsageError as e:
        print(f"{prog_name}: error: {e}", file=sys.stderr)
        return finish(2, error=str(e))

    old = {}
    _STOP["signal"] = None
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        try:
            old[sig] = signal.signal(sig, _on_stop_signal)
        except (ValueError, OSError):            # not the main thread
            pass
    try:
        summary = run_items(workload, items, opts.src, opts.dst, opts, state_dir=state_dir,
                            node=opts.node, shard=shard,
                            progress_bar=sys.stdout.isatty() and not opts.quiet)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if summary.get("stopped"):
        code = 128 + summary["stopped"]
        print(f"{prog_name}: stopped by signal {summary['stopped']} (exit {code})", file=sys.stderr)
    elif summary["complete"]:
        code = 0
    else:
        code = 3 if summary.get("error") else 1
    if summary.get("error"):
        print(f"{prog_name}: error: {summary['error']}", file=sys.stderr)
    _log(opts, "summary " + json.dumps(summary, sort_keys=True))
    print(" ".join(f"{k}={summary[k]}" for k in SUMMARY_KEYS), flush=True)
    return finish(code, summary)
