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
import time

from invoke.exceptions import Exit

from playbooks.fs import safefs
from playbooks.runs.disk import LocalDisk, shared_disk
from playbooks.runs.layout import (STATE, fleetwork, local_disk, node_file, node_files, node_record,  # noqa: F401
                                   node_state_rel, read_json, run_rel, runs_dir, write_json, write_node_file)


class RunStateError(Exit):
    """A run's state cannot be read (typed; an ``Exit`` so that a step ends with its one line)."""


class NoRun(RunStateError):
    """No run yet on this shared disk."""


def save_run(where, record: dict, latest: bool = False) -> None:
    """The run record and a folder per node (``where``: a ``disk.shared_disk``); with ``latest``, LATEST names
    the run."""
    rel = run_rel(record["run_id"])
    for n in record["nodes"]:
        where.mkdirs(f"{rel}/nodes/{safefs.name(n['name'], 'node name')}")
    where.write_text(f"{rel}/run.json", json.dumps(record, indent=1))
    if latest:
        where.write_text(f"{STATE}/runs/LATEST", record["run_id"] + "\n")


def latest(c, disk=None) -> str:
    text = (disk or LocalDisk(c)).read_text(f"{STATE}/runs/LATEST")
    if not text or not text.strip():
        raise NoRun("no run yet: start one with `invoke run --workload resize`")
    return safefs.name(text.strip(), f"the run id in {STATE}/runs/LATEST")


def check_record(record, run_id: str) -> dict:
    """A run record read back from the shared disk (which nodes can write): its names and paths are checked
    as if they were flags, so an altered record cannot point the head outside the shared root."""
    try:
        if not isinstance(record, dict) or not isinstance(record.get("nodes"), list):
            raise safefs.Refused("it is not a run record")
        safefs.name(record.get("run_id"), "run_id")
        check_paths(record)
        if record.get("workload") not in fleetwork().available() or not isinstance(record.get("args", ""), str) \
                or type(record.get("started_at")) not in (int, float):
            raise safefs.Refused("its workload, args or started_at is not what `invoke run` writes")
        for n in record["nodes"]:
            safefs.name(n.get("name") if isinstance(n, dict) else n, "node name")
    except safefs.Refused as exc:
        raise RunStateError(f"the record of run {run_id!r} is not valid ({exc.message}): was it altered?") from None
    return record


def check_paths(record: dict) -> None:
    """src / dst below the shared root, or both in a bucket (issue 14, ``runs/buckets.py``), as ``invoke run``
    checks its flags; a bucket run's endpoint is a plain http(s) address."""
    from playbooks.runs import buckets
    if buckets.is_bucket_run(record):
        try:
            buckets.check_pair(str(record.get("src")), str(record.get("dst")))
        except buckets.BucketError as exc:
            raise safefs.Refused(str(exc)) from None
        if not str(record.get("s3_endpoint", "http://")).startswith(("http://", "https://")):
            raise safefs.Refused("its s3_endpoint is not an http(s) address")
        return
    for key in ("src", "dst"):
        safefs.rel_path(record.get(key, ""), key)


def load_run(c, run_id: str = "", provider: str = "", fleet: str = "") -> dict:
    disk = shared_disk(c, provider, fleet)
    run_id = safefs.name(run_id, "--run-id") if run_id else latest(c, disk)
    text = disk.read_text(f"{run_rel(run_id)}/run.json")
    try:
        record = json.loads(text) if text else None
    except ValueError:
        record = None
    if record is None:
        raise RunStateError(f"run {run_id!r} not found on the head instance" if disk.remote else
                   f"run {run_id!r} not found under {runs_dir(c)}: see `ls {runs_dir(c)}`")
    return check_record(record, run_id)


def node_status(record: dict, node: str, heartbeat: dict | None, exit_: dict | None, lost_after: float,
                now: float | None = None) -> str:
    """done / failed (exit code != 0) / unhealthy (exit 4: the mount it lost did not come back) / preempted (it got a preemption notice: its last heartbeat or exit says
    so) / running / lost (no heartbeat for lost_after seconds) / starting."""
    now = now or time.time()
    # issue 13: a preempted node is not a lost or failed one; a replacement counts from its own start
    if (exit_ or {}).get("preempted") or (exit_ is None and (heartbeat or {}).get("state") == "preempted"):
        return "preempted"
    started = next((e.get("started_at") for e in record["nodes"] if isinstance(e, dict) and e.get("name") == node
                    and type(e.get("started_at")) in (int, float)), None) or record["started_at"]
    if exit_ is not None:
        if exit_.get("unhealthy") or exit_.get("code") == 4:   # its mount dropped and did not come back
            return "unhealthy"
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
