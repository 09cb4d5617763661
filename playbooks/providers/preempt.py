"""Preempting a local node like a cloud does (issue 13): a notice first, the whole node killed after the grace.

The notice is a file in the node's workdir (``NOTICE_FILE``), where the workload's notice watcher
(the workloads' ``fw_notice``, ``$FLEETBOOK_NOTICE_FILE``) sees it within a second; its content is the grace period.
"""
from __future__ import annotations

import os
import pwd
import threading
import time
from pathlib import Path

from playbooks.providers import local

NOTICE_FILE = ".fleetbook-preempt-notice"   # in the node's workdir (the supervisor's node env names it)


def raise_notice(c, fleet: str, node: str, grace: float) -> Path:
    labels = local._read_labels(local.node_dir(c, fleet, node))
    if not labels:
        raise KeyError(node)
    path = Path(labels["home"]) / "fleetbook" / NOTICE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{grace:g}\n")
    os.chmod(path, 0o644)
    if os.geteuid() == 0 and labels.get("isolation") == "user":
        ids = pwd.getpwnam(labels["user"])
        os.chown(path, ids.pw_uid, ids.pw_gid)
    return path


def preempt(c, fleet: str, node: str, grace: float, *, wait: bool = True) -> threading.Thread | None:
    """The notice now, the node killed ``grace`` seconds later (in a thread when not ``wait``)."""
    raise_notice(c, fleet, node, grace)

    def later():
        time.sleep(grace)
        local.kill_node(c, fleet, node)

    if wait:
        later()
        return None
    t = threading.Thread(target=later, name=f"preempt-{node}", daemon=True)
    t.start()
    return t
