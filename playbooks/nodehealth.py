"""A node whose shared-disk mount dropped (issue 13 item 4): its last words read over SSH, its mount repaired, its
workload restarted on its shard.

While the mount is gone a node cannot write its heartbeat or exit file on the shared disk: the head would only see
it ``lost``.  So every node also keeps its last words on its own disk, in ``<workdir>/.runs/<run-id>/``
(``engines.launch.local_state``): ``log.txt`` (all the workload printed), ``health.json`` (the runner's
``mount-lost`` / ``running`` / ``unhealthy``, with the error) and ``exit.json``.  ``diagnose`` reads them over
SSH together with the state of the node's mount (a ``statfs`` on it) and whether its workload still runs;
``cause`` turns that into one line ("mount lost: Transport endpoint is not connected").

The supervisor (``heal``, called from ``supervise.supervise`` at every poll) does, for a node that is lost (its
heartbeat stale) or ``unhealthy`` but still answers SSH with a mount problem: remount it (``mount.mount_all``:
lazy unmount + sshfs); if its workload still waits for the mount (``job.mount_wait``) it goes on by itself,
else it is started again on its shard.  If the remount fails the node is left to the usual replacement.
``invoke progress`` and ``run --wait`` name the cause of a lost node the same way (``name_causes``).
"""
from __future__ import annotations

import dataclasses
import json
import time

from rich.console import Console

from playbooks.engines.launch import is_mounted, local_state, mount_answers
from playbooks.providers import TERMINATED
from playbooks.runs.layout import machine_of
from playbooks.settings import setting
from playbooks.ssh.fanout import describe, fan_out, q, run_checked

console = Console()
SUSPECT_AFTER_S = 6.0                  # a running node silent this long (3 heartbeats) is looked at over SSH
SUSPECT_S = 5.0                        # ... at most this often
CACHE_S = 10.0                         # `progress --watch`: one SSH look at a lost node per this many seconds
_CACHE: dict = {}                      # (run id, node) -> (time, diagnosis)


def node_env(c) -> dict[str, str]:
    """What every node's workload gets: how long it waits for a dropped mount (``job.mount_wait``)."""
    return {"FLEETBOOK_MOUNT_WAIT": str(setting(c, "job.mount_wait"))}


# ------------------------------------------------------------------------------------------------- looking
def last_words_command(node, run_id: str, pid) -> str:
    mp = q(node.mountpoint)
    local = q(f"{local_state(run_id)}")
    alive = f"kill -0 {int(pid)} 2>/dev/null && echo yes || echo no" if isinstance(pid, int) else "echo unknown"
    return (f"cd {q(node.workdir)} 2>/dev/null; "
            f"if {is_mounted(mp)}; then if why=$(timeout 10 stat -f {mp} 2>&1 >/dev/null); then echo 'mount: ok'; "
            f"else why=${{why##*: }}; echo \"mount: dead ${{why:-no answer within 10 s}}\"; fi; "
            f"else echo 'mount: absent'; fi; echo \"alive: $({alive})\"; "
            f"for f in health.json exit.json; do echo \"== $f\"; cat {local}/$f 2>/dev/null; echo; done; "
            f"echo '== log'; tail -n 5 {local}/log.txt 2>/dev/null; true")


def parse_last_words(text: str) -> dict:
    d: dict = {"reachable": True, "mount": "unknown", "alive": None, "health": None, "exit": None, "log": []}
    section = None
    chunks: dict = {"health.json": [], "exit.json": [], "log": []}
    for line in text.splitlines():
        if section is None and line.startswith("mount: "):
            word = line[len("mount: "):]
            d["mount"], d["mount_error"] = ("ok", None) if word == "ok" else ("absent", None) if word == "absent" \
                else ("dead", word[len("dead "):])
        elif section is None and line.startswith("alive: "):
            d["alive"] = {"yes": True, "no": False}.get(line[len("alive: "):])
        elif line.startswith("== "):
            section = line[3:]
        elif section in chunks:
            chunks[section].append(line)
    for key, name in (("health", "health.json"), ("exit", "exit.json")):
        try:
            value = json.loads("\n".join(chunks[name]) or "null")
            d[key] = value if isinstance(value, dict) else None
        except ValueError:
            d[key] = None
    d["log"] = [ln for ln in chunks["log"] if ln.strip()][-5:]
    return d


def diagnose(c, record: dict, names: list[str]) -> dict[str, dict]:
    """Per node of ``names``: reachable over SSH?, its mount (ok / dead + why / absent), its workload alive?, its
    local health.json and exit.json, the tail of its local log.  A machine that is gone: not reachable."""
    from playbooks.fleet import provider_of
    prov = provider_of(c, record.get("provider", "local"))
    nodes = {n.name: n for n in prov.list_nodes(c, record["fleet"])}
    pids = {e["name"]: e.get("pid") for e in record["nodes"]}
    machine = {e["name"]: machine_of(e) for e in record["nodes"]}
    out = {n: {"reachable": False, "error": "its machine is gone"} for n in names
           if machine.get(n, n) not in nodes or nodes[machine.get(n, n)].state == TERMINATED}
    # each machine under the run's name for it (a replacement on a reused name: layout.machine_of)
    ask = [dataclasses.replace(nodes[machine.get(n, n)], name=n) for n in names if n not in out]
    timeout = setting(c, "fleet.ssh_timeout")
    for r in fan_out(c, record["fleet"], ask, lambda conn, n: run_checked(
            conn, last_words_command(n, record["run_id"], pids.get(n.name)), timeout), step="diagnose"):
        out[r.node.name] = parse_last_words(r.value) if r.ok else {"reachable": False,
                                                                   "error": f"unreachable over SSH: {r.error}"}
    now = time.time()
    for n, d in out.items():
        _CACHE[(record["run_id"], n)] = (now, d)
    return out


def cause(d: dict) -> str | None:
    """One line: why the node stopped reporting (the mount it lost, its own error), or None when it does not say."""
    if not d.get("reachable"):
        return d.get("error")
    if d.get("mount") == "dead":
        return f"mount lost: {d.get('mount_error')}"
    for rec in (d.get("exit"), d.get("health")):
        if rec and rec.get("error") and rec.get("state") != "running":
            return str(rec["error"]).splitlines()[0][:200]
    if d.get("mount") == "absent":
        return "the shared disk is not mounted on it"
    return None


def mount_trouble(d: dict) -> bool:
    """The node answers SSH and its trouble is its mount (dead or gone now, or its workload says it lost it)."""
    if not d.get("reachable"):
        return False
    said = [(r or {}).get("state") for r in (d.get("health"), d.get("exit"))] + \
        [("unhealthy" if (d.get("exit") or {}).get("unhealthy") else None)]
    return d.get("mount") in ("dead", "absent") or any(s in ("mount-lost", "unhealthy") for s in said)


def name_causes(c, record: dict, snap: dict) -> dict:
    """Fill in the ``error`` of every lost node of a snapshot from its last words (over SSH, at most one look per
    node every CACHE_S seconds), so that `progress` says why instead of just ``lost``."""
    lost = [n for n in snap["nodes"] if n["state"] in ("lost", "unhealthy") and not n.get("error")]
    if not lost:
        return snap
    now = time.time()
    stale = [n["name"] for n in lost if now - _CACHE.get((record["run_id"], n["name"]), (0.0, None))[0] > CACHE_S]
    if stale:
        try:
            diagnose(c, record, stale)
        except Exception as exc:  # noqa: BLE001 - a look that fails must not break `progress`
            for name in stale:
                _CACHE[(record["run_id"], name)] = (now, {"reachable": False, "error": describe(exc)})
    for n in lost:
        d = _CACHE.get((record["run_id"], n["name"]), (0.0, {}))[1] or {}
        n["error"] = cause(d)
    return snap


# ------------------------------------------------------------------------------------------------- healing
def restart(c, record: dict, entry: dict, node, env: dict[str, str]) -> bool:
    """Start the run's workload again on ``node`` (whose mount works again) on its own shard: its old heartbeat
    and exit file go first (else it would still look lost or ended)."""
    from playbooks.engines.launch import head_paths, node_command, workload_opts
    from playbooks.runs import disk as rundisk
    from playbooks.runs import state as runstate
    from playbooks.settings.defaults import shared_root
    provider = record.get("provider", "local")
    root = shared_root(c)
    _wl, _opts, extra = workload_opts(record["workload"], *head_paths(root, record), record.get("args", ""))
    workers = setting(c, "local.cores_per_node") if provider == "local" else None
    state = f"{node.mountpoint}/{runstate.node_state_rel(record['run_id'], node.name)}"
    command = (f"rm -f {q(state + '/heartbeat.json')} {q(state + '/exit.json')} && "
               + node_command(node, record, entry["shard"], extra, workers, env))
    [r] = fan_out(c, record["fleet"], [node], lambda conn, n: int(run_checked(
        conn, command, setting(c, "fleet.ssh_timeout")).split()[-1]), step="restart")
    if not r.ok:
        console.print(f"supervisor: could not restart the workload on {node.name}: {r.error}", markup=False)
        return False
    entry.update(pid=r.value, started_at=time.time(), restarts=int(entry.get("restarts", 0)) + 1)
    runstate.save_run(rundisk.of_record(c, record), record)
    return True


def heal(c, record: dict, states: dict, listed: dict, events: dict, env: dict[str, str]) -> None:
    """One supervisor poll (see the module docstring): nodes that are lost or unhealthy but answer SSH with a
    mount problem are remounted (and restarted if their workload is gone); while one is under repair its state
    in ``states`` reads ``repairing`` so that it is not replaced.  ``record["repairs"]`` keeps each repair
    (node, cause, times), for the final report.  ``env``: the workload's environment for a restart."""
    from playbooks.fleet import provider_of
    from playbooks.mount import mount_all
    repairs = record.setdefault("repairs", [])
    now = time.time()
    lost_after = float(setting(c, "job.lost_after"))
    # a workload that waits for its mount goes on within a poll of the remount, or ends unhealthy after
    # job.mount_wait; a restarted one reports within lost_after
    grace = float(setting(c, "job.mount_wait")) + lost_after + 2.0
    for rep in repairs:                         # an open repair: the node is working again, or given time
        if not rep.get("open"):
            continue
        st = states.get(rep["node"], {})
        # working again: it made an output since (its heartbeat's last_output_at; done counts whole claim blocks),
        # or it ended well (the others may have left it nothing to do)
        made = st.get("last_output_at")
        made = made if isinstance(made, (int, float)) and made > rep["detected_at"] else None
        if (st.get("state") == "running" and (made or (st.get("done") or 0) > rep.get("done_before", 0))) or \
                st.get("state") == "done":
            rep.update(open=False, working_at=min(now, made) if made else now)
            console.print(f"supervisor: {rep['node']} works again ({now - rep['detected_at']:.1f} s after its "
                          f"mount loss was seen)", markup=False)
        elif st.get("state") in ("failed", "preempted"):
            rep["open"] = False
        elif st.get("state") != "running" and now - rep.get("acted_at", rep["detected_at"]) > grace:
            rep.update(open=False, recheck=True)          # looked at again below: the same repair goes on
        else:
            st["state"] = "repairing"
    open_ = {rep["node"] for rep in repairs if rep.get("open")}

    def suspect(name: str) -> bool:
        st = states.get(name, {})
        if st.get("state") in ("lost", "unhealthy"):
            return True
        # silent for a few heartbeats but not lost yet: a look costs one SSH command, at most every SUSPECT_S
        seen = st.get("last_seen_s")
        return st.get("state") == "running" and seen is not None and seen > SUSPECT_AFTER_S and \
            now - _CACHE.get((record["run_id"], name), (0.0, None))[0] > SUSPECT_S
    suspects = [e for e in record["nodes"] if not e.get("replaced_by") and e["name"] not in events
                and e["name"] not in open_ and suspect(e["name"])
                and listed.get(machine_of(e), TERMINATED) != TERMINATED]
    if not suspects:
        return
    looks = diagnose(c, record, [e["name"] for e in suspects])
    nodes = {n.name: n for n in provider_of(c, record.get("provider", "local")).list_nodes(c, record["fleet"])}
    for e in suspects:
        d = looks.get(e["name"], {})
        if states[e["name"]].get("state") == "running" and not (d.get("reachable") and d.get("mount") == "dead"):
            continue                              # only late: its mount answers (or it does not answer at all)
        if not mount_trouble(d) or machine_of(e) not in nodes:
            if cause(d):
                states[e["name"]]["error"] = cause(d)
            continue
        why = cause(d) or "mount lost"
        again = next((r for r in repairs if r["node"] == e["name"] and r.pop("recheck", False)), None)
        rep = again or {"node": e["name"], "shard": e["shard"], "cause": why, "detected_at": now}
        if states.get(e["name"], {}).get("seen_at") and "seen_at" not in rep:   # its last heartbeat (eta.changes)
            rep["seen_at"] = states[e["name"]]["seen_at"]
        rep.update(open=True, done_before=int(states.get(e["name"], {}).get("done") or 0))
        console.print(f"supervisor: {e['name']} stopped reporting: {why}", markup=False)
        node = dataclasses.replace(nodes[machine_of(e)], name=e["name"])   # its state folder: the run's name
        if d.get("mount") in ("dead", "absent"):
            [m] = mount_all(c, record["fleet"], [node], record.get("provider", "local"))
            if not m.ok:
                console.print(f"supervisor: remounting {e['name']} failed ({m.error}): it is replaced", markup=False)
                events[e["name"]] = {"cause": "lost", "detected_at": now, "detail": f"{why}; remount failed"}
                rep.update(open=False, remount_failed=m.error)
                if not again:
                    repairs.append(rep)
                continue
            rep["remounted_at"] = time.time()
        if d.get("alive"):
            rep["action"] = "remounted; its workload went on by itself"
        elif restart(c, record, e, node, env):
            rep.update(action=f"remounted and restarted on shard {e['shard']}", restarted_at=time.time(),
                       done_before=0)
        else:
            events[e["name"]] = {"cause": "lost", "detected_at": now, "detail": f"{why}; restart failed"}
            rep["open"] = False
        rep["acted_at"] = time.time()
        if not again:
            repairs.append(rep)
        if rep["open"]:
            states[e["name"]]["state"] = "repairing"
            console.print(f"supervisor: {e['name']}: {rep['action']}", markup=False)


def report_fields(record: dict) -> dict:
    """What the final report says of mounts: how many were repaired, each repair's node and cause, and the time
    from a mount loss being seen to the node's first output after it."""
    reps = record.get("repairs", [])
    done = [r for r in reps if r.get("working_at")]
    return {"mounts_repaired": len(done),
            "repairs": [{k: r[k] for k in ("node", "cause", "action", "detected_at", "working_at") if k in r}
                        for r in reps],
            "mount_loss_to_working_s": [round(r["working_at"] - r["detected_at"], 1) for r in done]}


def summary_line(report: dict) -> str:
    """The final report's words on mounts ("" when none dropped)."""
    if not report.get("repairs"):
        return ""
    causes = sorted({f"{r['node']}: {r['cause']}" for r in report["repairs"]})
    return f"; mounts repaired {report['mounts_repaired']} ({', '.join(causes)})"
