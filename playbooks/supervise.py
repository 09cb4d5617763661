"""`invoke run ... --until-done` and `invoke run --attach [RUN_ID]`: the operator's side carries a run to its end.

The supervisor polls the run state on the shared disk (``progress.snapshot``) every ``job.poll`` seconds.  A node
that is gone (its heartbeat older than ``job.lost_after``, its machine terminated, or preempted: its last
heartbeat or exit says so) is replaced: the provider's idempotent ``create`` refills the fleet to its size, then
mount, deploy and start run on the NEW nodes only, each taking the shard of the node it replaces; the other
nodes keep working untouched.  Per-item claims (``workloads/fw_claims.py``) keep the replacement, the owners and
the helpers from doing an item twice.  It ends when every item is done or recorded as failed and every node has
finished, then prints the final report (also kept as ``report.json`` in the run's folder).

Bounds: ``--max-replacements`` (``job.max_replacements``) and, where the provider prices its nodes,
``--budget-usd`` (``job.budget_usd``: no new node once the projected cost would pass it); with a bound hit it
says so and leaves the fleet as it is.  Stopping the supervisor (Ctrl-C, a closed terminal) stops nothing on the
fleet: the nodes run detached; ``invoke run --attach`` resumes from the run record, which holds every
replacement made so far.

Stages (``invoke run --workload resize --then features``): each stage is supervised to its end, then the next
starts over its output folder (``run.supervise_stages``; ``run --attach`` to a stage goes on to the next).
"""
from __future__ import annotations

import dataclasses
import json
import time

from invoke.exceptions import Exit
from rich.console import Console

from playbooks import nodehealth, progress
from playbooks.fleet import provider_of
from playbooks.providers import PENDING, RUNNING, TERMINATED, UNREACHABLE, FleetSpec
from playbooks.providers.preempt import NOTICE_FILE   # local provider: in the node's workdir (fleet.preempt)
from playbooks.runs import disk as rundisk
from playbooks.runs import state as runstate
from playbooks.runs.layout import machine_of  # noqa: F401 - also what run.py's stop imports from here
from playbooks.settings import setting
from playbooks.settings.errors import FleetbookError
from playbooks.settings.defaults import shared_root

console = Console()
GONE = ("lost", "preempted", "failed", "unhealthy")   # states of a node that does no more work and is replaced
STATUS_EVERY_S = 10.0                    # a status line this often
ALIVE = (RUNNING, PENDING, UNREACHABLE)  # what every provider's create counts as a machine of the fleet


def node_env_extra(c, provider: str) -> dict[str, str]:
    """What every node's workload gets for claims and preemption notices (run.py's start hook)."""
    env = {"FLEETBOOK_LOST_AFTER": str(setting(c, "job.lost_after"))}
    if provider == "local":
        env["FLEETBOOK_NOTICE_FILE"] = NOTICE_FILE           # relative to the workdir the workload runs in
    elif provider in ("gcp", "aws"):
        env["FLEETBOOK_METADATA_KIND"] = provider
        env["FLEETBOOK_METADATA_URL"] = setting(c, "job.metadata_url") or DEFAULT_METADATA[provider]
    env.update(nodehealth.node_env(c))                      # issue 13 item 4: how long a dropped mount is waited for
    delay = setting(c, "job.item_delay")
    if delay > 0:
        env["FLEETBOOK_ITEM_DELAY"] = str(delay)
    return env


DEFAULT_METADATA = {"gcp": "http://metadata.google.internal", "aws": "http://169.254.169.254"}


# ------------------------------------------------------------------------------------------------- replacing
def _entries(record: dict) -> list[dict]:
    return [e for e in record["nodes"] if not e.get("replaced_by")]


def _run_name(record: dict, machine: str) -> str:
    taken = {e["name"] for e in record["nodes"]}
    if machine not in taken:
        return machine
    return next(f"{machine}.{k}" for k in range(2, 10_000) if f"{machine}.{k}" not in taken)


def _deploy_new(c, name: str, provider: str, nodes) -> list:
    from playbooks import deploy
    from playbooks.ssh.fanout import fan_out, fleet_dir
    results = fan_out(c, name, nodes, lambda conn, n: deploy.deploy_one(
        c, conn, n, deploy.files_to_ship(c, provider, n)), step="deploy")
    path = fleet_dir(c, name) / "deploy.json"
    rec = runstate.read_json(path) or {}
    rec.update({r.node.name: r.value for r in results if r.ok})
    path.write_text(json.dumps(rec, indent=1))
    return results


def start_on(c, record: dict, pairs: list[tuple[object, dict]]) -> list:
    """Start the run's workload on new nodes, each with the shard of the entry it replaces; the record (on the
    shared disk) gets an entry per new node and names it in the entry it replaces."""
    from playbooks.engines.launch import head_paths, node_command, workload_opts
    from playbooks.measure.profiles import node_env
    from playbooks.runs.disk import shared_disk
    from playbooks.ssh.fanout import fan_out, run_checked
    provider = record.get("provider", "local")
    disk = shared_disk(c, provider, record["fleet"])
    root = shared_root(c)
    _wl, _opts, extra = workload_opts(record["workload"], *head_paths(root, record), record.get("args", ""))
    now = time.time()
    as_run = {}                       # machine -> the node as the run knows it (its name in the run)
    for node, old in pairs:
        entry = {"name": _run_name(record, node.name), "shard": old["shard"], "started_at": now,
                 "replaces": old["name"]}
        if entry["name"] != node.name:
            entry["machine"] = node.name
        record["nodes"].append(entry)
        old["replaced_by"] = entry["name"]
        as_run[node.name] = dataclasses.replace(node, name=entry["name"])
    runstate.save_run(disk, record)
    for node, _old in pairs:
        disk.give_to_nodes(f"{runstate.run_rel(record['run_id'])}/nodes/{as_run[node.name].name}")
    workers = setting(c, "local.cores_per_node") if provider == "local" else None
    env = {**node_env(c, provider), **node_env_extra(c, provider)}
    timeout = setting(c, "fleet.ssh_timeout")
    shard_of = {node.name: old["shard"] for node, old in pairs}
    results = fan_out(c, record["fleet"], [n for n, _ in pairs], lambda conn, n: int(run_checked(
        conn, node_command(as_run[n.name], record, shard_of[n.name], extra, workers, env), timeout).split()[-1]),
        step="start")
    for r in results:
        for e in record["nodes"]:
            if e["name"] == as_run[r.node.name].name:
                e["pid"] = r.value if r.ok else None
    runstate.save_run(disk, record, latest=True)
    return results


def replace(c, record: dict, gone: list[dict], events: dict) -> list[str]:
    """Refill the fleet (the provider's idempotent create), then mount, deploy and start on the new nodes only.
    Returns the names of the nodes that started.

    A lost (or failed) node whose machine is still listed is made to vanish first, as a cloud's health check
    would.  A preempted one is left to end by itself: its workload has stopped, its machine still has the rest
    of its notice, and its replacement boots meanwhile (the notice is there for that: 30 s on GCP, 2 min on
    AWS), so the fleet is asked for its size plus the machines of the run that are on their way out."""
    from playbooks.mount import mount_all
    provider = record.get("provider", "local")
    prov = provider_of(c, provider)
    name = record["fleet"]
    listed = {n.name: n.state for n in prov.list_nodes(c, name)}
    killed = {machine_of(e) for e in gone if events.get(e["name"], {}).get("cause") != "preempted"
              and listed.get(machine_of(e)) in ALIVE and _vanish(c, prov, name, machine_of(e))}
    # a new machine: not one of the run's other nodes, and under a name the run never had, or (a cloud refills
    # under the names it lost) another machine than the one seen when the loss was detected
    busy = {machine_of(e) for e in _entries(record) if e not in gone}
    known = {machine_of(e) for e in record["nodes"]}
    old_ids = {ev.get("machine_id") for ev in events.values()} - {None, ""}   # every machine the run lost

    def is_new(n) -> bool:
        return n.state != TERMINATED and n.name not in busy and (
            n.name not in known or (bool(n.id) and n.id not in old_ids))
    size = int(record.get("shards") or len(_entries(record)))
    # the run's machines that no longer work but are still alive (preempted, within their notice): on top of the
    # size; one that ends between this look and create's own makes create short by one, never a node too many
    leaving = sum(1 for m, state in listed.items() if state in ALIVE and m in known and m not in busy | killed)
    spec = FleetSpec(name=name, count=size + leaving, provider=provider, spot=True, min_count=1,
                     ttl_hours=setting(c, "fleet.ttl_hours"))
    prov.create(c, spec)
    # wait for the NEW nodes only: another node of the fleet may be dying meanwhile (it is replaced next)
    deadline = time.monotonic() + setting(c, "fleet.ready_timeout")
    while True:
        nodes = prov.list_nodes(c, name)
        fresh = [n for n in nodes if is_new(n)]
        if all(n.state == "running" for n in fresh):
            break
        if time.monotonic() > deadline:
            console.print(f"supervisor: new nodes not ready ({', '.join(n.name for n in fresh if n.state != 'running')}"
                          "); trying again at the next poll", markup=False)
            return []
        time.sleep(0.2)
    new = fresh[:len(gone)]
    if not new:
        console.print(f"supervisor: the provider made no new node for {', '.join(e['name'] for e in gone)} "
                      f"(fleet: {', '.join(f'{n.name} {n.state}' for n in nodes)}); trying again", markup=False)
        return []
    # their host keys pinned from the cloud's word (a new machine has a new key), SSH answering
    ready = {n.name for n in prov.wait_ready(c, name, setting(c, "fleet.ready_timeout"), only={n.name for n in new})}
    new = [n for n in new if n.name in ready]
    for r in mount_all(c, name, new, provider):
        if not r.ok:
            new = [n for n in new if n.name != r.node.name]
    ok = {r.node.name for r in _deploy_new(c, name, provider, new) if r.ok}
    new = [n for n in new if n.name in ok]
    pairs = list(zip(new, sorted(gone, key=lambda e: e["shard"])))
    if not pairs:
        return []
    results = start_on(c, record, pairs)
    by_machine = {machine_of(e): e["name"] for e in _entries(record)}
    started = [by_machine.get(r.node.name, r.node.name) for r in results if r.ok]
    for _node, old in pairs:
        ev = events.setdefault(old["name"], {})
        ev.update(replaced_by=old["replaced_by"], replaced_at=time.time())
    return started


def _vanish(c, prov, fleet: str, machine: str) -> bool:
    """Kill a gone node's machine that the provider still lists as alive (paused, hung, its workload failed):
    only then can create refill its place.  True when it was asked to go."""
    try:
        prov.kill_node(c, fleet, machine)
    except Exception as exc:  # noqa: BLE001 - a cloud's error: create finds it alive and the next poll tries again
        console.print(f"supervisor: could not remove {machine} ({exc}); trying again", markup=False)
        return False
    return True


# ------------------------------------------------------------------------------------------------- the loop
def supervise(c, record: dict, max_replacements: int | None = None, budget_usd: float | None = None) -> dict:
    """Carry the run to its end (see the module docstring); returns the final report."""
    poll = setting(c, "job.poll")
    max_replacements = setting(c, "job.max_replacements", max_replacements)
    budget_usd = setting(c, "job.budget_usd", budget_usd) or None
    record.setdefault("shards", len(record["nodes"]))
    record["until_done"] = True
    events: dict = record.setdefault("events", {})
    polls: list = []
    prov = provider_of(c, record.get("provider", "local"))
    bound = None
    shown = 0.0
    console.print(f"supervising run {record['run_id']} until every item is done "
                  f"(Ctrl-C stops only this supervisor; resume with `invoke run --attach {record['run_id']}`)")
    try:
        while True:
            now = time.time()
            snap = progress.snapshot(c, record, now)
            left = snap["total"] - snap["done"] - snap["failed"]
            eta = snap["eta_s"]     # the head's rate window (runs/eta.py), shared with `invoke progress`
            polls.append({"t": round(now, 2), "done": snap["done"], "failed": snap["failed"],
                          "total": snap["total"], "eta_s": None if eta is None else round(eta, 1)})
            if now - shown >= STATUS_EVERY_S:
                shown = now
                console.print(f"supervisor: {snap['done']}/{snap['total']} done, {snap['failed']} failed, "
                              f"{snap['rate_per_s']:.1f} items/s, ETA "
                              f"{'-' if eta is None else f'{eta:.0f} s'}", markup=False)
            states = {n["name"]: n for n in snap["nodes"]}
            machines = prov.list_nodes(c, record["fleet"])
            listed = {n.name: n.state for n in machines}
            heal_mounts(c, record, states, listed, events)   # a dropped mount: remount, not replace
            for e in _entries(record):
                st = states.get(e["name"], {}).get("state")
                ev = events.get(e["name"])
                if ev is None and st in ("running", "starting") and \
                        listed.get(machine_of(e), TERMINATED) == TERMINATED:
                    st = "lost"               # its machine is gone: no need to wait for job.lost_after
                if st in GONE and ev is None:
                    events[e["name"]] = {"cause": "preempted" if st == "preempted" else st, "detected_at": now,
                                         "machine_id": next((n.id for n in machines if n.name == machine_of(e)), "")}
                    if states.get(e["name"], {}).get("seen_at"):   # its last heartbeat (runs/eta.changes)
                        events[e["name"]]["seen_at"] = states[e["name"]]["seen_at"]
                    if states.get(e["name"], {}).get("error"):     # its own words (nodehealth.diagnose)
                        events[e["name"]]["detail"] = states[e["name"]]["error"]
                    console.print(f"supervisor: {e['name']} is {st} (shard {e['shard']})", markup=False)
            for ev in events.values():       # a replacement is working once it made its first output
                new = states.get(ev.get("replaced_by"), {})
                first = new.get("first_output_at")     # the node's word for it (its done counts whole blocks)
                if new and "working_at" not in ev and (isinstance(first, (int, float)) or (new.get("done") or 0) > 0):
                    ev["working_at"] = min(now, first) if isinstance(first, (int, float)) else now
            if left <= 0 and all(states.get(e["name"], {}).get("state") in progress.ENDED for e in _entries(record)):
                break
            gone = [e for e in _entries(record) if e["name"] in events and left > 0]
            if gone:
                made = sum(1 for ev in events.values() if ev.get("replaced_by"))
                if made + len(gone) > max_replacements:
                    bound = f"--max-replacements {max_replacements} reached"
                    break
                if budget_usd and snap.get("cost_usd") is not None:
                    price = setting(c, "fleet.price_per_hour")
                    projected = snap["cost_usd"] + price * int(record["shards"]) * (eta or 0) / 3600
                    if projected > budget_usd:
                        bound = f"--budget-usd {budget_usd:g}: projected cost ${projected:.2f} would pass it"
                        break
                try:
                    started = replace(c, record, gone, events)
                except FleetbookError as exc:       # no capacity, a node that does not answer, ...
                    console.print(f"supervisor: no replacement yet ({exc}); trying again", markup=False)
                    started = []
                if started:
                    console.print(f"supervisor: replaced {', '.join(e['name'] for e in gone)} with "
                                  f"{', '.join(started)}", markup=False)
                runstate.save_run(rundisk.of_record(c, record), record)
                if started:
                    continue
            time.sleep(poll)
    except KeyboardInterrupt:
        _save(c, record)
        raise Exit(f"supervisor stopped; the run goes on on the fleet: `invoke run --attach {record['run_id']}` "
                   "resumes it", code=130) from None
    if not bound:     # every node has ended: what the dead ones left half-written goes
        from playbooks.runs.sweep import sweep_ended_run
        record["swept"] = sweep_ended_run(c, record)
    snap = progress.snapshot(c, record)
    report = final_report(c, record, snap, polls, bound)
    report.update(nodehealth.report_fields(record))
    _save(c, record, report)
    show(report)
    if bound:
        raise Exit(f"run {record['run_id']}: {bound}; the fleet is left as it is "
                   f"(`invoke run --attach {record['run_id']}` goes on)")
    return report


def _save(c, record: dict, report: dict | None = None) -> None:
    disk = rundisk.of_record(c, record)
    runstate.save_run(disk, record)
    if report is not None:
        disk.write_text(f"{runstate.run_rel(record['run_id'])}/report.json", json.dumps(report, indent=1))


def final_report(c, record: dict, snap: dict, polls: list, bound: str | None) -> dict:
    events = record.get("events", {})
    ends = [ev for ev in events.values()]
    # the first look that saw every item settled (the nodes end a little later)
    finish = min((p["t"] for p in polls if p["done"] + p["failed"] >= p["total"]), default=time.time())
    boot = [ev["working_at"] - ev["detected_at"] for ev in ends if "working_at" in ev]
    wall = finish - record["started_at"]
    replaced = [e for e in record["nodes"] if e.get("replaces")]
    cost = snap.get("cost_usd")
    return {
        "run_id": record["run_id"], "total": snap["total"], "done": snap["done"], "failed": snap["failed"],
        "processed": snap["processed"],
        "duplicate_pct": round(100.0 * max(0, snap["processed"] - snap["done"]) / snap["done"], 2)
        if snap["done"] else 0.0,
        "nodes_lost": sum(1 for ev in ends if ev.get("cause") in ("lost", "failed")),
        "nodes_preempted": sum(1 for ev in ends if ev.get("cause") == "preempted"),
        "nodes_replaced": len(replaced),
        "replacement_to_working_s": [round(b, 1) for b in boot],
        "wall_s": round(wall, 1), "cost_usd": cost, "bound": bound, "swept_temps": record.get("swept", 0),
        "eta_polls": polls, "eta_error_max_pct": eta_error(polls, finish, record["started_at"]),
        "eta_error_mean_pct": eta_error(polls, finish, record["started_at"], mean=True),
    }


def eta_error(polls: list, finish: float, started: float, mean: bool = False) -> float | None:
    """The worst (or ``mean``) error of the head's ETA at the polls from 10 % to 90 % done, as a share of the
    run's length; None when the ETA was unknown at one of them."""
    errs = []
    for p in polls:
        frac = (p["done"] + p["failed"]) / p["total"] if p["total"] else 1.0
        if 0.1 <= frac <= 0.9:
            if p["eta_s"] is None:
                return None
            errs.append(abs(p["t"] + p["eta_s"] - finish) / (finish - started))
    if not errs:
        return None
    return round(100 * (sum(errs) / len(errs) if mean else max(errs)), 1)


def show(report: dict) -> None:
    cost = "" if report["cost_usd"] is None else f", cost ${report['cost_usd']:.2f} (replacement boots included)"
    console.print(
        f"run {report['run_id']}: {report['done']}/{report['total']} done, {report['failed']} failed; "
        f"processed {report['processed']} for {report['done']} done ({report['duplicate_pct']:.1f} % duplicate); "
        f"nodes lost {report['nodes_lost']}, preempted {report['nodes_preempted']}, replaced "
        f"{report['nodes_replaced']}; wall time {report['wall_s']:.1f} s{cost}"
        + nodehealth.summary_line(report) + (f"; stopped: {report['bound']}" if report["bound"] else ""),
        markup=False)


# ------------------------------------------------------------------------------------------------- mounts
def heal_mounts(c, record: dict, states: dict, listed: dict, events: dict) -> None:
    """Issue 13 item 4 (playbooks/nodehealth.py): a node that stopped reporting because its mount dropped is
    remounted and goes on (or starts again) on its shard instead of being replaced."""
    from playbooks.measure.profiles import node_env
    provider = record.get("provider", "local")
    nodehealth.heal(c, record, states, listed, events, {**node_env(c, provider), **node_env_extra(c, provider)})


def attach(c, run_id: str = "", provider: str = "", name: str = "", **bounds) -> dict:
    record = runstate.load_run(c, run_id, provider, name)
    return supervise(c, record, **bounds)


