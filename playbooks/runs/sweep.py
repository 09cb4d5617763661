"""The head's sweep of what a run's dead nodes left in its output folder (issue 13): temp files of writes cut
half-way (a node killed mid-write) and the claims folder.  Run once every node of the run has ended, so no temp
file there belongs to a live writer.  Through descriptors only (``os.fwalk`` on the destination opened by
``safefs``): a folder a node swapped for a symlink is never followed, so the head (root) deletes nothing
outside the output folder, and only files named like the workloads' temps (``fw_outputs.parse_temp``)."""
from __future__ import annotations

import os

from playbooks.runs import disk as rundisk
from playbooks.runs import state as runstate


def sweep_if_ended(c, record: dict, snap: dict) -> int:
    """``sweep_ended_run`` once every node of the run has ended by itself (none lost: a lost node may still write);
    its claim blocks' done markers (one file per block, ``workloads/fw_claims.py``) go with it."""
    if snap["nodes"] and all(n["state"] in ("done", "failed", "preempted", "unhealthy") for n in snap["nodes"]):
        return sweep_ended_run(c, record)
    return 0


def sweep_ended_run(c, record: dict) -> int:
    """Remove the temp files and stale claims below the run's destination on this machine's disk; returns how
    many files went.  (With a head instance the destination is not here: nothing is done.)"""
    shared = rundisk.of_record(c, record)
    if not isinstance(shared, rundisk.LocalDisk):
        return 0
    runstate.fleetwork()                  # puts workloads/ on sys.path
    import fw_outputs
    disk = shared.root
    try:
        fd = disk._open_dir([p for p in record["dst"].split("/") if p and p != "."])
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    try:
        for _top, dirs, files, dfd in os.fwalk(".", dir_fd=fd):
            for name in files:
                if fw_outputs.parse_temp(name) or (_top.endswith("/.claims") or _top == "./.claims"):
                    try:
                        os.unlink(name, dir_fd=dfd)
                        removed += 1
                    except FileNotFoundError:
                        pass
            if _top == "./.claims":
                dirs[:] = []
        try:
            os.rmdir(".claims", dir_fd=fd)
        except OSError:
            pass
    finally:
        os.close(fd)
    return removed
