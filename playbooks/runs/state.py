"""Where a run's state lives on the shared disk, and how the head reads it.

``<shared.root>/.fleetbook/runs/<run-id>/``
    ``run.json``                      the run record: workload, src, dst, args, nodes (name, shard, pid), start
    ``nodes/<node>/log.txt``          everything the node's workload printed
    ``nodes/<node>/heartbeat.json``   items done, skipped, failed, items/s, updated every few seconds
    ``nodes/<node>/exit.json``        written when the node's workload ends: its exit code and summary
``<shared.root>/.fleetbook/runs/LATEST``   the id of the newest run

Failed items are recorded by the workload itself next to its outputs, one atomic file per item, in
``<dst>/.failed/`` (see ``workloads/fleetwork.py``), so a standalone run and a fleet run agree on them.
The head reads all of this on its own disk, never over a mount, and through ``safefs`` only: what nodes can write
below the shared root is never trusted, so no symlink there is followed, and a run id, node name, ``src`` or
``dst`` read back from a run record is checked like a flag before it names a path.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from invoke.exceptions import Exit

from playbooks.fs import safefs
from playbooks.settings.defaults import REPO, shared_root

STATE = ".fleetbook"


def runs_dir(c) -> Path:
    return shared_root(c) / STATE / "runs"


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
    """Atomic (temp file + rename), the folder made as needed."""
    safefs.Root(path.parent).write_json(path.name, data)


def local_disk(c) -> safefs.Root:
    """The shared root on this machine, reached through ``safefs`` only."""
    return safefs.Root(shared_root(c))


def remote(c, provider: str = "", fleet: str = ""):
    """The head instance (``cloud_common.RemoteHead``) when the fleet's shared disk lives on one, else None (the
    shared root is on this machine).  Asked of the provider's optional ``remote_head`` hook."""
    provider = provider or str(c.config.fleet.provider)
    if provider == "local":
        return None
    from playbooks.providers import get
    hook = getattr(get(provider), "remote_head", None)
    return hook(c, fleet or str(c.config.fleet.name)) if hook else None


def disk(c, provider: str = "", fleet: str = ""):
    """Where the shared root is: a head instance (over SFTP) or this machine; both have ``read_text``,
    ``is_dir``, ``mkdirs`` and ``write_text`` with paths relative to the shared root, none following a link."""
    head = remote(c, provider, fleet)
    return head if head is not None else local_disk(c)


def run_rel(run_id: str) -> str:
    return f"{STATE}/runs/{safefs.name(run_id, 'run id')}"


def save_run(where, record: dict, latest: bool = False) -> None:
    """The run record and a folder per node (``where``: see ``disk``); with ``latest``, LATEST names the run."""
    rel = run_rel(record["run_id"])
    for n in record["nodes"]:
        where.mkdirs(f"{rel}/nodes/{safefs.name(n['name'], 'node name')}")
    where.write_text(f"{rel}/run.json", json.dumps(record, indent=1))
    if latest:
        where.write_text(f"{STATE}/runs/LATEST", record["run_id"] + "\n")


def latest(c, head=None) -> str:
    text = (head or local_disk(c)).read_text(f"{STATE}/runs/LATEST")
    if not text or not text.strip():
        raise Exit("no run yet: start one with `invoke run --workload resize`")
    return safefs.name(text.strip(), f"the run id in {STATE}/runs/LATEST")


def check_record(record, run_id: str) -> dict:
    """A run record read back from the shared disk (which nodes can write): its names and paths are checked
    as if they were flags, so an altered record cannot point the head outside the shared root."""
    try:
        if not isinstance(record, dict) or not isinstance(record.get("nodes"), list):
            raise safefs.Refused("it is not a run record")
        safefs.name(record.get("run_id"), "run_id")
        for key in ("src", "dst"):
            safefs.rel_path(record.get(key, ""), key)
        if record.get("workload") not in fleetwork().available() or not isinstance(record.get("args", ""), str) \
                or type(record.get("started_at")) not in (int, float):
            raise safefs.Refused("its workload, args or started_at is not what `invoke run` writes")
        for n in record["nodes"]:
            safefs.name(n.get("name") if isinstance(n, dict) else n, "node name")
    except safefs.Refused as exc:
        raise Exit(f"the record of run {run_id!r} is not valid ({exc.message}): was it altered?") from None
    return record


def load_run(c, run_id: str = "", provider: str = "", fleet: str = "") -> dict:
    head = remote(c, provider, fleet)
    run_id = safefs.name(run_id, "--run-id") if run_id else latest(c, head)
    text = (head or local_disk(c)).read_text(f"{run_rel(run_id)}/run.json")
    try:
        record = json.loads(text) if text else None
    except ValueError:
        record = None
    if record is None:
        raise Exit(f"run {run_id!r} not found on the head instance" if head else
                   f"run {run_id!r} not found under {runs_dir(c)}: see `ls {runs_dir(c)}`")
    return check_record(record, run_id)


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


def node_status(record: dict, node: str, heartbeat: dict | None, exit_: dict | None, lost_after: float,
                now: float | None = None) -> str:
    """done / failed (exit code != 0) / preempted (it got a preemption notice: its last heartbeat or exit says
    so) / running / lost (no heartbeat for lost_after seconds) / starting."""
    now = now or time.time()
    # issue 13: a preempted node is not a lost or failed one; a replacement counts from its own start
    if (exit_ or {}).get("preempted") or (exit_ is None and (heartbeat or {}).get("state") == "preempted"):
        return "preempted"
    started = next((e.get("started_at") for e in record["nodes"] if isinstance(e, dict) and e.get("name") == node
                    and type(e.get("started_at")) in (int, float)), None) or record["started_at"]
    if exit_ is not None:
        return "done" if exit_.get("code", 1) == 0 else "failed"
    seen = heartbeat.get("updated_at") if heartbeat else None
    if seen is None:
        return "lost" if now - started > lost_after else "starting"
    return "lost" if now - seen > lost_after else "running"


def node_error(heartbeat: dict | None, exit_: dict | None) -> str | None:
    """Why a node's workload stopped, in its own words (e.g. "shared disk full on the head: ..."), or None."""
    for rec in (exit_, heartbeat):
        if rec and rec.get("error"):
            return str(rec["error"]).splitlines()[0][:200]
    return None


SAME_TIME_S = 5.0   # heartbeats come every 2 s: nodes whose last ones are this close stopped together


def common_cause(nodes: list[dict], free_bytes: int | None = None) -> str | None:
    """A cause shared by every node that stopped, from a snapshot's nodes (name, state, last_seen_s, error):
    the shared disk full on the head, or a head that no node reaches any more (each of at least two nodes lost,
    their last heartbeats within SAME_TIME_S of each other, none still running); else None."""
    stopped = [n for n in nodes if n["state"] in ("lost", "failed")]
    if not stopped:
        return None
    if free_bytes is not None and free_bytes < fleetwork().DISK_FULL_BELOW or any(
            "disk full" in (n.get("error") or "") for n in stopped):
        return "the shared disk on the head is full: free space there, then re-run"
    lost = [n for n in nodes if n["state"] == "lost"]
    seen = [n["last_seen_s"] for n in lost if n.get("last_seen_s") is not None]
    if len(lost) >= 2 and len(seen) == len(lost) and max(seen) - min(seen) <= SAME_TIME_S and \
            not any(n["state"] in ("running", "starting") for n in nodes):
        return (f"all {len(lost)} lost nodes stopped reporting within {max(seen) - min(seen):.0f} s of each other: "
                "the head (its SFTP sshd, its disk or the tunnel to it) is the likely cause, not the nodes; "
                "check that the head's sshd runs (`invoke mount` says whether the nodes reach it)")
    return None


def fleetwork():
    """The workloads' shared helper, imported on the head from the repository's workloads/ folder."""
    folder = str(REPO / "workloads")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import fleetwork as fw
    return fw
