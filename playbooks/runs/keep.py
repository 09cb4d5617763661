"""Results never die with the fleet: what ``fleet.down`` / ``teardown`` must not delete without being told.

With a head instance the shared root lives on the head's disk, so deleting the head deletes every output.  The
rule: a head instance is deleted only when every run on it had its outputs pulled since the run ended
(``invoke data.pull`` records each pull in ``<shared root>/.fleetbook/pulled.json``), or with
``--discard-results``.  Otherwise ``fleet.down`` deletes the nodes, keeps the head (its cost per hour named)
and says what to pull, and how to delete it later (``invoke data.drop --yes``).  A head that is not running
(stopped by its TTL: the head's TTL stops it, never deletes it) cannot be checked, so it is kept too;
``data.pull`` and ``fleet.create`` start it again.  A run ended when its last node wrote its exit file or its
last heartbeat; a pull of the run's destination, or of a folder above it, that started later covers it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from playbooks.runs import buckets
from playbooks.runs.layout import STATE
from playbooks.settings import setting

PULLED = f"{STATE}/pulled.json"
# rough list prices of a head's disk, USD per GB-month: GCP balanced persistent disk, AWS gp3 (late 2025)
DISK_USD_PER_GB_MONTH = {"gcp": 0.10, "aws": 0.08}
HOURS_PER_MONTH = 730


@dataclass
class Verdict:
    head: str                                           # the head instance's name
    running: bool
    unpulled: list[dict] = field(default_factory=list)  # {"run_id", "dst", "ended_at"} never pulled since

    @property
    def safe(self) -> bool:
        return self.running and not self.unpulled


def _json(head, rel: str) -> dict | None:
    text = head.read_text(rel)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def record_pull(head, rel: str, started_at: float, to: str, files: int) -> None:
    """Remember on the head that ``rel`` was pulled completely, from a listing made at ``started_at``."""
    pulled = _json(head, PULLED) or {}
    pulled[rel] = {"at": started_at, "to": to, "files": files}
    head.write_text(PULLED, json.dumps(pulled, indent=1))


def covers(pulled_rel: str, dst: str) -> bool:
    return pulled_rel in ("", ".") or dst == pulled_rel or dst.startswith(pulled_rel.rstrip("/") + "/")


def run_ended_at(head, record: dict) -> float:
    """The last sign of life of a run: its nodes' exit files and heartbeats, else its start."""
    last = float(record.get("started_at") or 0)
    for node in record.get("nodes", []):
        folder = f"{STATE}/runs/{record['run_id']}/nodes/{node['name']}"
        for name, key in (("exit.json", "finished_at"), ("heartbeat.json", "updated_at")):
            rec = _json(head, f"{folder}/{name}") or {}
            if rec.get(key):
                last = max(last, float(rec[key]))
    return last


def unpulled(head) -> list[dict]:
    """The runs on the head instance whose outputs were not pulled since they ended."""
    try:
        ids = [n for n in head.sftp().listdir(f"/{head_data()}/{STATE}/runs") if n != "LATEST"]
    except OSError:
        return []
    pulled = _json(head, PULLED) or {}
    out = []
    for run_id in sorted(ids):
        record = _json(head, f"{STATE}/runs/{run_id}/run.json")
        if not record or buckets.is_bucket_run(record):   # a bucket run's outputs are in the bucket, not here
            continue
        ended = run_ended_at(head, record)
        if not any(covers(rel, record["dst"]) and float(p.get("at", 0)) >= ended for rel, p in pulled.items()):
            out.append({"run_id": run_id, "dst": record["dst"], "ended_at": ended})
    return out


def head_data() -> str:
    from playbooks.providers import cloud as cc
    return cc.HEAD_DATA


def check(c, prov, fleet: str) -> Verdict | None:
    """None when the fleet has no head instance (its shared root is on this machine: nothing to lose)."""
    find = getattr(prov, "head_node", None)
    node = find(c, fleet) if find else None
    if node is None:
        return None
    from playbooks.providers import RUNNING
    from playbooks.runs.head_instance import RemoteHead
    if node.state != RUNNING:
        return Verdict(node.name, False)
    head = RemoteHead(c, fleet, node)
    try:
        return Verdict(node.name, True, unpulled(head))
    except Exception as exc:  # noqa: BLE001 - an unreadable head is kept, never deleted on a guess
        return Verdict(node.name, False, [{"run_id": "?", "dst": "?", "ended_at": time.time(), "error": str(exc)}])
    finally:
        head.close()


def describe(v: Verdict) -> str:
    if not v.running:
        return f"the head instance {v.head} is not running, so its outputs cannot be checked"
    runs = ", ".join(f"{u['run_id']} ({u['dst']}/)" for u in v.unpulled)
    return f"the head instance {v.head} holds outputs never pulled since their run ended: {runs}"


def plan_line(v: Verdict, hold: bool, cost: str) -> str:
    """What ``fleet.down --dry-run`` says about the head instance and the data on it."""
    if hold:
        return f"would KEEP {v.head} ({cost}): {describe(v)}"
    why = "every run's outputs were pulled since it ended" if v.safe else f"--discard-results: {describe(v)}"
    return f"would DELETE {v.head} and the shared root on its disk ({why})"


def monthly_cost(c, provider: str) -> str:
    """What a kept head instance costs a month, stopped (its disk) and running (plus its machine)."""
    from playbooks.providers import cloud as cc
    gb = setting(c, f"{provider}.head_disk_gb")
    mtype = setting(c, f"{provider}.head_machine_type" if provider == "gcp" else f"{provider}.head_instance_type")
    disk = gb * DISK_USD_PER_GB_MONTH.get(provider, 0.10)
    hourly = cc.price_per_hour(c, provider, False, mtype)
    running = f", ${disk + hourly * HOURS_PER_MONTH:,.0f}/month running as {mtype}" if hourly else ""
    return f"{gb} GB disk: about ${disk:,.0f}/month stopped{running}"


def advice(v: Verdict, name: str, provider: str) -> str:
    dst = v.unpulled[0]["dst"] if v.unpulled and v.unpulled[0]["dst"] != "?" else "out"
    start = "" if v.running else " (it starts the stopped head first)"
    return (f"`invoke data.pull --provider {provider} --name {name} --from {dst} --to ./results` "
            f"(or s3:// / gs://){start}, then fleet.down again; `--discard-results` deletes it with them, "
            f"and so does `invoke data.drop --provider {provider} --name {name} --yes` later")
