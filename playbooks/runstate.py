"""Where a run's state lives on the shared disk, and how the head reads it.

``<shared.root>/.fleetbook/runs/<run-id>/``
    ``run.json``                      the run record: workload, src, dst, args, nodes (name, shard, pid), start
    ``nodes/<node>/log.txt``          everything the node's workload printed
    ``nodes/<node>/heartbeat.json``   items done, skipped, failed, items/s, updated every few seconds
    ``nodes/<node>/exit.json``        written when the node's workload ends: its exit code and summary
``<shared.root>/.fleetbook/runs/LATEST``   the id of the newest run

Failed items are recorded by the workload itself next to its outputs, one atomic file per item, in
``<dst>/.failed/`` (see ``workloads/fleetwork.py``), so a standalone run and a fleet run agree on them.
The head reads all of this on its own disk, never over a mount.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from invoke.exceptions import Exit

from .config import REPO, shared_root

STATE = ".fleetbook"


def runs_dir(c) -> Path:
    return shared_root(c) / STATE / "runs"


def run_dir(c, run_id: str) -> Path:
    return runs_dir(c) / run_id


def node_state_rel(run_id: str, node: str) -> str:
    """The node's state folder relative to the shared root (the same below every mountpoint)."""
    return f"{STATE}/runs/{run_id}/nodes/{node}"


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def remote(c, provider: str = "", fleet: str = ""):
    """The head instance (``cloud_common.RemoteHead``) when the fleet's shared disk lives on one, else None (the
    shared root is on this machine).  Asked of the provider's optional ``remote_head`` hook."""
    provider = provider or str(c.config.fleet.provider)
    if provider == "local":
        return None
    from .providers import get
    hook = getattr(get(provider), "remote_head", None)
    return hook(c, fleet or str(c.config.fleet.name)) if hook else None


def latest(c, head=None) -> str:
    try:
        text = head.read_text(f"{STATE}/runs/LATEST") if head else (runs_dir(c) / "LATEST").read_text()
    except OSError:
        text = None
    if not text:
        raise Exit("no run yet: start one with `invoke run --workload resize`")
    return text.strip()


def load_run(c, run_id: str = "", provider: str = "", fleet: str = "") -> dict:
    head = remote(c, provider, fleet)
    run_id = run_id or latest(c, head)
    if head is not None:   # on the head instance
        text = head.read_text(f"{STATE}/runs/{run_id}/run.json")
        record = json.loads(text) if text else None
    else:
        record = read_json(run_dir(c, run_id) / "run.json")
    if record is None:
        raise Exit(f"run {run_id!r} not found on the head instance" if head else
                   f"run {run_id!r} not found under {runs_dir(c)}: see `ls {runs_dir(c)}`")
    return record


def node_files(c, run_id: str, node: str) -> tuple[dict | None, dict | None]:
    """(heartbeat, exit record) of one node, as the head sees them on its disk."""
    folder = run_dir(c, run_id) / "nodes" / node
    return read_json(folder / "heartbeat.json"), read_json(folder / "exit.json")


def node_status(record: dict, node: str, heartbeat: dict | None, exit_: dict | None, lost_after: float,
                now: float | None = None) -> str:
    """done / failed (exit code != 0) / running / lost (no heartbeat for lost_after seconds) / starting."""
    now = now or time.time()
    if exit_ is not None:
        return "done" if exit_.get("code", 1) == 0 else "failed"
    seen = heartbeat.get("updated_at") if heartbeat else None
    if seen is None:
        return "lost" if now - record["started_at"] > lost_after else "starting"
    return "lost" if now - seen > lost_after else "running"


def fleetwork():
    """The workloads' shared helper, imported on the head from the repository's workloads/ folder."""
    folder = str(REPO / "workloads")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import fleetwork as fw
    return fw
