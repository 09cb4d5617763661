"""How far a run is: outputs counted against inputs on the head's own disk, plus each node's heartbeat.

Counting is one directory scan of the destination on the head (never a stat per file, never over a mount);
the workload itself says what its items are and which output belongs to each (``fleetwork.count_progress``).
"""
from __future__ import annotations

import json
import sys
import time

from invoke import task
from invoke.exceptions import Exit
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from playbooks.runs import disk as rundisk
from playbooks.runs import eta
from playbooks.settings import setting
from playbooks.runs import state as runstate
from playbooks.fleet import provider_of
from playbooks import nodehealth

console = Console()


ENDED = ("done", "failed", "lost", "preempted", "unhealthy")  # node states after which a node does no more work in the run
BROKEN = ("lost", "failed", "unhealthy")   # ended states that have a cause to name (progress's table and --json)


def snapshot(c, record: dict, now: float | None = None) -> dict:
    """The numbers of a run right now, in the shape `invoke progress --json` prints.

    ``processed`` is the sum of the nodes' own counts (an item done twice counts twice); once every node has
    finished, ``duration_s`` runs from the start to the last exit or heartbeat and ``rate_per_s`` is the run's
    average (items this run made per second), else ``duration_s`` is None and the rate and ``eta_s`` are the
    head's (``runs/eta.py``: outputs counted over the recent looks at the run, per node working, times the nodes
    working now, with the replacements the supervisor will make; this look is added to that window).
    ``heartbeat_rate_per_s``: the running nodes' own rates summed (what the ETA fell back on before it had a window).
    A node's own ``rate_per_s`` is its current rate while it runs, its average once it has finished.
    """
    now = now or time.time()
    disk = rundisk.of_record(c, record)
    tally = disk.tally(record)
    counts, free = tally.counts, tally.free_bytes
    lost_after = setting(c, "job.lost_after")
    nodes, rate, last = [], 0.0, 0.0
    for entry in record["nodes"]:
        beat, exit_ = tally.node(entry["name"])
        state = runstate.node_status(record, entry["name"], beat, exit_, lost_after, now)
        state = replaced_state(record, entry, state)
        # a node's last heartbeat holds its own average so far: what it does now, or did over its whole run
        node_rate = float(beat.get("rate_per_s", 0.0)) if beat and state in ("running", "done", "failed") else 0.0
        rate += node_rate if state == "running" else 0.0
        seen = beat.get("updated_at") if beat else None
        last = max(last, seen or 0.0, (exit_ or {}).get("finished_at") or 0.0)
        nodes.append({"name": entry["name"], "rate_per_s": round(node_rate, 3),
                      "last_seen_s": round(now - seen, 1) if seen else None, "seen_at": seen, "state": state,
                      "done": node_done(beat, exit_), "failed": beat.get("failed", 0) if beat else 0,
                      "error": runstate.node_error(beat, exit_),
                      "first_output_at": (beat or {}).get("first_output_at"),
                      "last_output_at": (beat or {}).get("last_output_at")})
    left = counts["total"] - counts["done"] - counts["failed"]
    elapsed = now - record["started_at"]
    processed = sum(n["done"] for n in nodes)
    over = all(n["state"] in ENDED for n in nodes)
    span = last - record["started_at"] if over and last > record["started_at"] else None
    eta_s, beat_rate = None, rate
    if span:   # a finished run: its average, of what this run made (outputs that were there are not its work)
        rate = min(counts["done"], processed) / span
    elif not over:   # the head's own count over time (runs/eta.py), shared by every look at the run
        rate, eta_s = eta.look(disk, runstate.run_rel(record["run_id"]), record, nodes, now,
                               counts["done"] + counts["failed"], left, working_nodes(record, nodes), lost_after,
                               heartbeat_rate=rate)
    return {
        "run_id": record["run_id"], "workload": record["workload"], "total": counts["total"],
        "done": counts["done"], "failed": counts["failed"], "rate_per_s": round(rate, 3),
        "eta_s": 0.0 if left <= 0 else None if eta_s is None else round(eta_s, 1),
        "elapsed_s": round(elapsed, 1), "duration_s": round(span, 1) if span else None, "processed": processed,
        "cost_usd": cost(c, record, elapsed), "nodes": nodes,
        "head_free_bytes": free, "heartbeat_rate_per_s": round(beat_rate, 3), **node_counts(record, nodes),
    }


def replaced_state(record: dict, entry: dict, state: str) -> str:
    """A node the supervisor replaced is what the supervisor saw it become (lost, preempted, failed), whatever
    its files say since (none, when its machine vanished before its first heartbeat)."""
    if entry.get("replaced_by") and state not in ENDED:
        cause = ((record.get("events") or {}).get(entry["name"]) or {}).get("cause")
        return cause if cause in ENDED else "lost"
    return state


def node_counts(record: dict, nodes: list[dict]) -> dict:
    """How many of the run's nodes were lost (no heartbeat for job.lost_after), preempted (they had notice and
    stopped cleanly: their items in flight are not failed items, they are left for others), failed (the
    workload ended non-zero) and how many joined as replacements."""
    states = [n["state"] for n in nodes]
    return {"nodes_lost": states.count("lost"), "nodes_preempted": states.count("preempted"),
            "nodes_failed": states.count("failed"),
            "nodes_replaced": sum(1 for e in record["nodes"] if e.get("replaces"))}


def working_nodes(record: dict, nodes: list[dict]) -> int:
    """Nodes that work on (running or starting), not counting one the supervisor found gone or replaced already
    (it may look alive until ``job.lost_after``), at most the run's shard count."""
    events = record.get("events") or {}
    replaced = {e["name"] for e in record["nodes"] if e.get("replaced_by") or e["name"] in events}
    working = sum(1 for n in nodes if n["state"] in ("running", "starting") and n["name"] not in replaced)
    return min(working, int(record.get("shards") or len(record["nodes"])))


def node_done(beat: dict | None, exit_: dict | None) -> int:
    """Items this node processed in the run: its exit summary's count, else its last heartbeat's."""
    summary = (exit_ or {}).get("summary") or {}
    return int(summary.get("done", (beat or {}).get("done", 0)))


def cost(c, record: dict, elapsed: float) -> float | None:
    """Cost so far: the provider's own estimate when it has one; None on a local fleet."""
    if record.get("provider", "local") == "local":
        return None
    return provider_of(c, record["provider"]).cost_so_far(c, record, elapsed)


def as_json(snap: dict) -> dict:
    """What `--json` prints: the run's numbers and, per node, name, rate, last seen, state and cause (why a
    lost, failed or unhealthy node ended, as the table says it: its own last words when they could be read;
    else null)."""
    keys = ("run_id", "total", "done", "failed", "rate_per_s", "eta_s", "elapsed_s", "duration_s", "processed",
            "cost_usd", "nodes_lost", "nodes_preempted", "nodes_failed", "nodes_replaced")
    return {k: snap[k] for k in keys} | {"nodes": [{k: n[k] for k in ("name", "rate_per_s", "last_seen_s", "state")}
                                                   | {"cause": _cause(n)} for n in snap["nodes"]]}


def _cause(node: dict) -> str | None:
    return (node.get("error") or None) if node["state"] in BROKEN else None


def finished(snap: dict) -> bool:
    return all(n["state"] in ENDED for n in snap["nodes"])


def table(snap: dict) -> Table:
    eta = "-" if snap["eta_s"] is None else f"{snap['eta_s']:.0f} s"
    when = (f"{snap['rate_per_s']:.1f} items/s on average, finished in {snap['duration_s']:.1f} s"
            if snap["duration_s"] else
            f"{snap['rate_per_s']:.1f} items/s, ETA {eta}, {snap['elapsed_s']:.0f} s elapsed")
    fleet = ", ".join(f"{snap.get('nodes_' + k, 0)} {k}" for k in ("lost", "preempted", "failed", "replaced")
                      if snap.get("nodes_" + k))
    t = Table(title=Text(f"run {snap['run_id']}: {snap['done']}/{snap['total']} done, {snap['failed']} failed, {when}"
                         + (f", ${snap['cost_usd']:.2f}" if snap["cost_usd"] is not None else "")
                         + (f"; nodes {fleet}" if fleet else "")),
              title_justify="left", caption=runstate.common_cause(snap["nodes"], snap.get("head_free_bytes")),
              caption_justify="left")
    for col in ("node", "state", "items/s", "done", "failed", "last seen"):
        t.add_column(col)
    for n in snap["nodes"]:
        seen = "-" if n["last_seen_s"] is None else f"{n['last_seen_s']:.0f} s ago"
        style = {"lost": "red", "failed": "red", "unhealthy": "red", "done": "green", "preempted": "yellow"}.get(
            n["state"], "")
        said = f" ({_cause(n)})" if _cause(n) else ""
        t.add_row(Text(n["name"]), Text(n["state"] + said, style=style), f"{n['rate_per_s']:.1f}",  # data: never markup
                  str(n["done"]), str(n["failed"]), seen)
    return t


def show_failed(c, record: dict) -> None:
    failures = rundisk.of_record(c, record).failures(record)
    t = Table(title=f"{len(failures)} failed item(s)", title_justify="left")
    for col in ("item", "reason", "node", "error"):
        t.add_column(col)
    for item, rec in sorted(failures.items()):
        t.add_row(*(Text(str(x)) for x in (item, rec.get("reason", ""), rec.get("node", ""),  # names are data
                                           str(rec.get("error", ""))[:80])))
    console.print(t)


def wait_until_finished(c, record: dict) -> dict:
    """A progress bar until every node has finished or is lost; exit non-zero naming lost or failed nodes."""
    poll = setting(c, "job.poll")
    snap = snapshot(c, record)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]:.1f} items/s"), TimeRemainingColumn(), console=console,
                  transient=False) as bar:
        job = bar.add_task(record["workload"], total=snap["total"] or None, rate=0.0)
        while True:
            bar.update(job, completed=snap["done"] + snap["failed"], rate=snap["rate_per_s"])
            if finished(snap):
                break
            time.sleep(poll)
            snap = snapshot(c, record)
    from playbooks.runs.sweep import sweep_if_ended
    sweep_if_ended(c, record, snap)           # every node ended: the claims' markers and dead temps go
    nodehealth.name_causes(c, record, snap)   # a lost node's own last words, over SSH (issue 13 item 4)
    console.print(table(snap))
    left = snap["total"] - snap["done"] - snap["failed"]
    bad = [f"{n['name']} ({n['state']}{': ' + n['error'] if n.get('error') else ''})" for n in snap["nodes"]
           if n["state"] in ("lost", "failed", "unhealthy") or (n["state"] == "preempted" and left > 0)]
    if bad:
        cause = runstate.common_cause(snap["nodes"], snap.get("head_free_bytes"))
        raise Exit(f"run {record['run_id']}: {', '.join(bad)}; {cause + '; ' if cause else ''}"
                   f"re-run `invoke run --workload {record['workload']}` to finish what they left")
    return snap


@task(help={
    "watch": "refresh until every node has finished (with --json: one JSON object per line)",
    "json": "print only JSON: run_id, total, done, failed, rate_per_s, eta_s, elapsed_s, duration_s, processed, "
            "cost_usd, nodes_lost, nodes_preempted (counted apart: a preempted node had notice, none of its items "
            "failed), nodes_failed, nodes_replaced, nodes (name, rate_per_s, last_seen_s, state, and cause: why a "
            "lost, failed or unhealthy node ended, or null)",
    "failed": "list the failed items with their reasons",
    "run_id": "which run (default: the latest)",
    "name": "fleet name (default: fleet.name); matters for a cloud fleet with a head instance",
    "provider": "local, gcp or aws (default: fleet.provider)",
})
def progress(c, watch=False, json_=False, failed=False, run_id="", name="", provider=""):
    """Done / failed / rate / ETA / cost of a run, counted on the head's own disk."""
    record = runstate.load_run(c, run_id, provider, name)
    poll = setting(c, "job.poll")
    snap = nodehealth.name_causes(c, record, snapshot(c, record))
    if json_:
        while True:
            print(json.dumps(as_json(snap)), flush=True)
            if not watch or finished(snap):
                break
            time.sleep(poll)
            snap = snapshot(c, record)
    elif watch:
        with Live(table(snap), console=console, refresh_per_second=4) as live:
            while not finished(snap):
                time.sleep(poll)
                snap = nodehealth.name_causes(c, record, snapshot(c, record))
                live.update(table(snap))
    else:
        console.print(table(snap))
    if failed and not json_:
        show_failed(c, record)
    sys.stdout.flush()
