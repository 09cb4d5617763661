"""Where a run's state lives below the shared root, and the files nodes write there as the head may read them.

(``state.py`` has the whole layout; this is the part the shared disk, ``disk.py``, needs below it.)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from playbooks.fs import safefs
from playbooks.settings.defaults import REPO, shared_root

STATE = ".fleetbook"


def runs_dir(c) -> Path:
    return shared_root(c) / STATE / "runs"


def machine_of(entry: dict) -> str:
    """The provider's name of the machine a run entry runs on.  A cloud refills a fleet under the names it lost
    (demo-1 again), so a replacement on a reused name joins the run as ``<name>.<k>`` (its own state folder,
    heartbeat and events) with ``machine`` naming the machine."""
    return entry.get("machine") or entry["name"]


def node_state_rel(run_id: str, node: str) -> str:
    """The node's state folder relative to the shared root (the same below every mountpoint)."""
    return f"{STATE}/runs/{run_id}/nodes/{node}"


def read_json(path: Path) -> dict | None:
    """A JSON file of the operator's own (not below the shared root), or None."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict) -> None:
    """Atomic (temp file + rename), the folder made as needed (``safefs.write_json_file``)."""
    safefs.write_json_file(path, data)


def local_disk(c) -> safefs.Root:
    """The shared root on this machine, reached through ``safefs`` only."""
    return safefs.Root(shared_root(c))


def run_rel(run_id: str) -> str:
    return f"{STATE}/runs/{safefs.name(run_id, 'run id')}"


_NUMBERS = ("updated_at", "started_at", "finished_at", "rate_per_s", "done", "skipped", "failed", "total", "code")


def node_record(rec) -> dict | None:
    """A heartbeat or exit record as the head may use it: a dict whose numeric fields are numbers (a field of
    another type is dropped: what a node writes is data, and must not crash the head's arithmetic)."""
    if not isinstance(rec, dict):
        return None
    out = {k: v for k, v in rec.items()
           if k not in _NUMBERS or (isinstance(v, (int, float)) and not isinstance(v, bool))}
    if "summary" in out:                      # an exit record's summary: the same rule, one level down
        out["summary"] = node_record(out["summary"]) or {}
    return out


def node_file(c, run_id: str, node: str, name: str) -> dict | None:
    """One JSON file a node wrote in its state folder, or None (missing, not JSON, or behind a symlink: a link
    there is no heartbeat)."""
    try:
        rec = local_disk(c).read_json(f"{run_rel(run_id)}/nodes/{safefs.name(node, 'node name')}/{name}")
    except safefs.Refused:
        return None
    return node_record(rec)


def node_files(c, run_id: str, node: str) -> tuple[dict | None, dict | None]:
    """(heartbeat, exit record) of one node, as the head sees them on its disk."""
    return node_file(c, run_id, node, "heartbeat.json"), node_file(c, run_id, node, "exit.json")


def write_node_file(c, run_id: str, node: str, name: str, data: dict) -> None:
    local_disk(c).write_json(f"{run_rel(run_id)}/nodes/{safefs.name(node, 'node name')}/{name}", data)



def fleetwork():
    """The workloads' shared helper, imported on the head from the repository's workloads/ folder."""
    folder = str(REPO / "workloads")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import fleetwork as fw
    return fw
