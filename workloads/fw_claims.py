"""Claims on the shared disk (per item, or per block of items), so that the owner of a shard and the nodes helping
it never do an item twice.

Before a node processes an item (a block: see below) it creates ``<dst>/.claims/<sha1(item)[:24]>`` atomically (``O_CREAT|O_EXCL``:
over sshfs an SFTP open with EXCL, decided on the head); the claim names its holder (host, worker pid, runner
pid, node, run, time).  Whoever holds a per-item claim re-checks that the output is still missing, does the item
and removes the claim.  A node that finds an item claimed leaves it ("busy") and comes back to it at the end of
its pass (``fw_runner.run_items``): by then its holder has finished it, or has died.

A claim is *stale*, and may be taken over, when its holder is gone:

* the same host (every node of a local fleet): its worker process is dead (``pid_alive``, pid reuse checked);
* another host: that node's heartbeat in the run's state folder is older than ``$FLEETBOOK_LOST_AFTER``
  seconds (``job.lost_after``, 30 by default), or it wrote its exit file, or, without a heartbeat to read,
  the claim is older than ten times that;
* an empty or unreadable claim (its holder died between create and write) older than that same bound.

Claims per block (``block_of``): a runner that knows the run's item count (``Job.total``) claims a block of
about ``$FLEETBOOK_CLAIM_BLOCK`` items (16 by default; 1 = one claim per item) at once: the items of one shard
whose hash falls in the same bucket (the item, the number of shards and the item count decide it, so every
node computes the same blocks).  A block's claim file (``.claims/b-<sha1(key)[:24]>``) stays for the run and
tells, with no stat per item over the mount, what is left (``acquire_block``, ``settle``): *held*; *done* (its
holder settled, i.e. did, skipped or recorded as failed, every item it had of the block: the claim is replaced
atomically, a temp renamed over it, by a done marker: a node of the run that comes to the block later skips it
whole, its ``O_EXCL`` create fails and one read shows "done"); or *partial* (its holder stopped early: a
notice, an error, a dropped mount, a block cut in two): the marker lists the items settled, the next taker
skips them.  A holder that made the claim from nothing knows nobody of the run has worked on the block and
does its items without looking at their outputs (the runner's start scan, one listing, left out what was
done); so does one that takes over a *clean* partial marker (its chain of holders goes back to a claim made
from nothing).  Only a holder that took over a stale claim (its holder died mid-block), its own claim left by
a dropped mount, or a marker of another run checks the outputs of the items it has no word on: one stat each,
at most a block's worth (a listing of a flat output folder would cost more); so a dead holder's block redoes
only the item that was in flight.  A block another worker of the same runner holds (``SHARED``) is busy: it
comes back at the end of the pass (``fw_pool`` keeps blocks whole; it times one item of a block, then the rest).

Markers belong to a run: the token of ``$FLEETBOOK_RUN`` (every node and replacement of one run), else of the
runner alone (``run_token``).  Another run's marker is never trusted: it is taken over like a stale claim and
its items' outputs are checked, so a re-run after outputs were deleted redoes them.  The claims folder thus
holds one small file per block (330,000 items / 16 = about 20,000): the head removes it once every node has
ended (``playbooks/runs/sweep.py``); the runner's own sweep does not read block files.

Taking over renames the stale claim away (only one of several takers can rename the same file) and creates a
fresh one with ``O_EXCL`` again.  Per-item claims are removed when their item is done or failed, and a runner
sweeps the stale ones it finds at the end of its run.
Standard library only (it runs on the nodes).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import socket
import time
from typing import NamedTuple

DIR = ".claims"
HOST = socket.gethostname()
STALE_MARK = ".stale-"


def lost_after() -> float:
    try:
        return max(1.0, float(os.environ.get("FLEETBOOK_LOST_AFTER", "30")))
    except ValueError:
        return 30.0


def block_size() -> int:
    try:
        return max(1, int(os.environ.get("FLEETBOOK_CLAIM_BLOCK", "16")))
    except ValueError:
        return 16


def block_of(item: str, shards: int, total: int, size: int | None = None) -> str | None:
    """The claim key of the block ``item`` belongs to, or None for a claim per item (block size 1, or an
    unknown item count).  ``shards`` = n of ``--shard i/n`` (1 without); ``total`` = the run's item count."""
    size = block_size() if size is None else size
    if size <= 1 or total <= 0:
        return None
    shards = max(1, shards)
    per_shard = max(1, -(-total // (shards * size)))        # blocks per shard
    h = int(hashlib.sha1(item.encode("utf-8", "surrogateescape")).hexdigest(), 16)
    return f"block:{per_shard}:{h % shards}:{(h // shards) % per_shard}"


def group_by_block(tasks: list, key) -> list[tuple[object, list]]:
    """``tasks`` grouped by ``key(task)`` (None: a group of its own), the groups in the order of their first task,
    each group's tasks in their order."""
    groups: dict = {}
    out: list[tuple[object, list]] = []
    for t in tasks:
        k = key(t)
        if k is None:
            out.append((None, [t]))
        elif k in groups:
            groups[k].append(t)
        else:
            groups[k] = [t]
            out.append((k, groups[k]))
    return out


SHARED = "shared"    # acquire_block: another worker of this runner holds the block (its part comes back later)
BLOCK_PREFIX = "b-"  # a block's claim file: never read by the runner's sweep (it stays for the run: see above)


class Held(NamedTuple):
    """acquire_block: this process holds the block.  ``settled``: the items the previous holder of this run said
    it settled (skipped without a look).  ``fresh``: no other item of the block was done in this run, so no
    output is to be checked: the claim was made from nothing, or taken over from a *clean* partial marker (one
    whose chain of holders goes back to a claim made from nothing); else the other items' outputs are checked."""
    path: str
    fresh: bool
    settled: frozenset = frozenset()


class Done(NamedTuple):
    """acquire_block: this run's done marker: every item is settled (``failed``: item -> reason, if any)."""
    failed: dict


def run_token(runner_pid: int | None = None) -> str:
    """Whose markers a runner trusts: ``$FLEETBOOK_RUN`` (every node and replacement of one run), else this
    runner alone (host, pid and start, so that a later run never trusts them)."""
    return os.environ.get("FLEETBOOK_RUN", "") or f"{HOST}:{runner_pid or os.getpid()}:{time.time_ns()}"


def path_for(dst: str, item: str) -> str:
    name = hashlib.sha1(item.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return os.path.join(dst, DIR, BLOCK_PREFIX + name if item.startswith("block:") else name)


def _me(item: str, runner_pid: int | None, node: str | None, state_dir: str | None, token: str = "") -> dict:
    rec = {"item": item, "host": HOST, "pid": os.getpid(), "runner": runner_pid or os.getpid(),
           "node": node or HOST, "run": os.environ.get("FLEETBOOK_RUN", ""), "state": state_dir or "",
           "time": time.time()}
    if token:
        rec["token"] = token
    return rec


def _create(path: str, rec: dict) -> bool:
    """True when this process made the claim file (it did not exist)."""
    data = json.dumps(rec).encode("utf-8", "surrogateescape")
    for attempt in range(4):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except (FileNotFoundError, PermissionError) as e:
            # over sshfs an EXCL create of a file that exists fails as EPERM (the SFTP server's plain "failure")
            if os.path.lexists(path):
                return False
            if attempt == 3:
                raise OSError(e.errno, f"cannot claim {path}: {e.strerror}") from None
            os.makedirs(os.path.dirname(path), exist_ok=True)   # the folder (first claim, or swept meanwhile);
            continue                                            # or the claim was released meanwhile
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return True
    return False


def _read(path: str) -> tuple[dict | None, float | None]:
    """(claim record or None when empty/unreadable, mtime or None when the file is gone)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())     # of the file read (no second lookup by name)
            raw = f.read(1 << 16)
    except FileNotFoundError:
        return None, None
    except OSError:
        return None, time.time()
    try:
        rec = json.loads(raw.decode("utf-8", "surrogateescape"))
    except ValueError:
        rec = None
    return (rec if isinstance(rec, dict) else None), st.st_mtime


def _pid_alive(pid, since) -> bool:
    from fw_outputs import pid_alive
    return isinstance(pid, int) and pid_alive(pid, since=since)


def _heartbeat_fresh(rec: dict, my_state: str | None) -> bool | None:
    """Is the claiming node's heartbeat recent?  None when there is no heartbeat of it to read."""
    node, run = rec.get("node"), rec.get("run")
    if not my_state or not isinstance(node, str) or "/" in node or node in ("", ".", "..") \
            or run != os.environ.get("FLEETBOOK_RUN", ""):
        return None
    folder = os.path.join(os.path.dirname(my_state.rstrip("/")), node)
    if os.path.exists(os.path.join(folder, "exit.json")):
        return False
    try:
        with open(os.path.join(folder, "heartbeat.json"), "rb") as f:
            beat = json.loads(f.read(1 << 16))
        seen = float(beat["updated_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return time.time() - seen <= lost_after()


def stale(rec: dict | None, mtime: float, my_state: str | None = None, now: float | None = None) -> bool:
    """Is a claim (its record, its file's mtime) held by a holder that is gone?  See the module docstring."""
    now = now or time.time()
    bound = lost_after()
    if rec is None:
        return now - mtime > bound
    since = rec.get("time") if isinstance(rec.get("time"), (int, float)) else mtime
    if rec.get("host") == HOST:
        return not _pid_alive(rec.get("pid"), since)
    fresh = _heartbeat_fresh(rec, my_state)
    if fresh is None:
        return now - since > 10 * bound
    return not fresh


def acquire(dst: str, item: str, *, runner_pid: int | None = None, node: str | None = None,
            state_dir: str | None = None) -> str | None:
    """Claim ``item``: the claim's path when this process holds it now, None when a live holder has it."""
    path = path_for(dst, item)
    me = _me(item, runner_pid, node, state_dir)
    if _create(path, me):
        return path
    rec, mtime = _read(path)
    if mtime is None:                     # released meanwhile: try once more
        return path if _create(path, me) else None
    if _own_leftover(path, rec):
        return path if _create(path, me) else None
    if not stale(rec, mtime, state_dir):
        return None
    return path if _take_over(path, rec, me) else None


def _own_leftover(path: str, rec: dict | None) -> bool:
    """This process's own claim from before its mount dropped: removed (True), to be made again."""
    if path in _LEFTOVER and (rec or {}).get("pid") == os.getpid() and (rec or {}).get("host") == HOST:
        _LEFTOVER.discard(path)
        _unlink(path)
        return True
    return False


def _take_over(path: str, rec: dict | None, me: dict) -> bool:
    """Replace the claim (or marker) ``rec`` read at ``path`` by ours; False when another taker was first."""
    away = f"{path}{STALE_MARK}{os.getpid()}-{random.getrandbits(32):08x}"
    try:
        os.rename(path, away)             # only one taker can move this very file
    except FileNotFoundError:
        return False
    moved, _ = _read(away)
    if rec is not None and moved is not None and moved != rec:   # someone took it over between our read and rename
        try:
            os.rename(away, path)
        except OSError:
            pass
        return False
    _unlink(away)
    return _create(path, me)


_LEFTOVER: set[str] = set()     # claims this process could not remove (its mount dropped): taken back on sight
_MOUNT_ERRNOS = (errno.ENOTCONN, errno.EIO, errno.ECONNABORTED, errno.ESTALE, errno.ETIMEDOUT)


def acquire_block(dst: str, key: str, *, token: str = "", runner_pid: int | None = None, node: str | None = None,
                  state_dir: str | None = None):
    """Claim the block ``key`` (see the module docstring): ``Held`` (this process holds it), ``Done`` (a done
    marker of this run: nothing to do), ``SHARED`` (a live worker of the same runner holds it), or None (a live
    holder has it).  ``token``: this run's (``run_token``); markers of another token are not trusted."""
    path = path_for(dst, key)
    me = _me(key, runner_pid, node, state_dir, token)
    if _create(path, me):
        return Held(path, True)
    rec, mtime = _read(path)
    if mtime is None:                     # gone meanwhile (a takeover under way): made again, but not fresh
        return Held(path, False) if _create(path, me) else None
    mark = rec.get("mark") if rec else None
    ours = bool(token) and rec is not None and rec.get("token") == token
    if mark == "done" and ours:
        failed = rec.get("failed")
        return Done(failed if isinstance(failed, dict) else {})
    if mark in ("done", "partial"):       # nobody holds it: taken over at once (another run's: nothing trusted)
        settled = rec.get("settled") if ours and mark == "partial" else None
        settled = frozenset(x for x in settled if isinstance(x, str)) if isinstance(settled, list) else frozenset()
        clean = ours and mark == "partial" and rec.get("clean") is True
        return Held(path, clean, settled) if _take_over(path, rec, me) else None
    if _own_leftover(path, rec):
        return Held(path, False) if _create(path, me) else None
    if not stale(rec, mtime, state_dir):
        if rec is not None and rec.get("host") == HOST and rec.get("runner") == (runner_pid or os.getpid()) \
                and rec.get("run") == os.environ.get("FLEETBOOK_RUN", "") and rec.get("token", "") == token:
            return SHARED
        return None
    return Held(path, False) if _take_over(path, rec, me) else None


def settle(claim: Held, *, token: str, done: bool, settled=(), failed: dict | None = None,
           node: str | None = None) -> None:
    """End this process's hold on a block: its claim becomes a done marker (``done``: every item of the block
    is settled) or a partial one naming the items ``settled`` so far; atomically (a temp file renamed over the
    claim).  Over a dropped mount the claim stays held: this process takes it back on sight."""
    rec = {"item": "", "mark": "done" if done else "partial", "token": token, "host": HOST, "pid": os.getpid(),
           "node": node or HOST, "run": os.environ.get("FLEETBOOK_RUN", ""), "time": time.time()}
    if failed:
        rec["failed"] = dict(failed)
    if not done:
        rec["settled"] = sorted(set(settled))
        rec["clean"] = claim.fresh        # the settled items are every item of the block done in this run
    tmp = f"{claim.path}{STALE_MARK}mark-{os.getpid()}-{random.getrandbits(32):08x}"
    try:
        with open(tmp, "wb") as f:
            f.write(json.dumps(rec).encode("utf-8", "surrogateescape"))
        os.replace(tmp, claim.path)
    except OSError as e:
        if e.errno not in _MOUNT_ERRNOS:
            _unlink(tmp)
            raise
        _LEFTOVER.add(claim.path)     # the item's error (the mount) is what the caller reports


def unsettled(dst: str) -> list[str]:
    """The claim files below ``dst`` but done markers: what a run that finished every item should not leave
    (held or stale claims, partial markers, temps; for tests and diagnostics: it reads every file)."""
    folder = os.path.join(dst, DIR)
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return [n for n in names if STALE_MARK in n or not n.startswith(BLOCK_PREFIX)
            or (_read(os.path.join(folder, n))[0] or {}).get("mark") != "done"]


def release(path: str | None) -> None:
    if path and path != SHARED:
        try:
            _unlink(path)
        except OSError as e:
            if e.errno not in _MOUNT_ERRNOS:
                raise
            _LEFTOVER.add(path)       # the item's error (the mount) is what the caller reports


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EBUSY):
            raise


def sweep(dst: str, state_dir: str | None = None, own_token: str = "") -> int:
    """Remove the stale per-item claims below ``dst``, the temp files of takeovers (one scandir of the claims
    folder; block claims and markers stay for the run, but ``own_token``'s: a runner by hand, whose markers no one
    trusts, removes its own, one read each), and the folder when it is empty; returns how many were removed."""
    folder = os.path.join(dst, DIR)
    removed = 0
    try:
        names = [e.name for e in os.scandir(folder)]
    except OSError:
        return 0
    for name in names:
        path = os.path.join(folder, name)
        if name.startswith(BLOCK_PREFIX) and STALE_MARK not in name:
            rec = (_read(path)[0] or {}) if own_token else {}
            if own_token and rec.get("token") == own_token and rec.get("mark") in ("done", "partial"):
                removed += _unlink(path) or 1
            continue                      # a block's claim or marker: it stays for the run (the head removes it)
        if STALE_MARK in name:
            rec, mtime = _read(path)
            if mtime is not None and time.time() - mtime > lost_after():
                _unlink(path)
                removed += 1
            continue
        rec, mtime = _read(path)
        if mtime is not None and (rec is None or rec.get("pid") != os.getpid()) and stale(rec, mtime, state_dir):
            _unlink(path)
            removed += 1
    try:
        os.rmdir(folder)
    except OSError:
        pass
    return removed


# ------------------------------------------------------------------------------------------------ test knob
def item_delay() -> None:
    """Test-only: ``$FLEETBOOK_ITEM_DELAY`` seconds of sleep before each item (``job.item_delay``), so that a
    chaos test has a run long enough to break, without burning the CPU it shares with the fleet."""
    try:
        delay = float(os.environ.get("FLEETBOOK_ITEM_DELAY", "0") or 0)
    except ValueError:
        return
    if delay > 0:
        time.sleep(delay)
