"""fw_failures: the failure records of bad items, ``<dst>/.failed/<sha1(item)[:20]>.json`` (one atomic file per
item, never an append to a shared file: the destination may be an sshfs mount), and the output collisions that
become such records.  Standard library only.
"""
from __future__ import annotations

import json
import os
import stat
import time

from fw_outputs import HOST, parse_temp, write_json
from fw_shards import item_hash

FAILED_DIR = ".failed"


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



def read_failed_dir(dst: str) -> tuple[dict[str, dict], list[str]]:
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
                if parse_temp(name):
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
    return read_failed_dir(dst)[0]


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

