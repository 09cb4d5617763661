"""Start a workload on every node of the fleet, detached, over the shared disk; stop it.

Every node runs ``python workloads/<w>.py --src M/src --dst M/dst --shard i/n --state ...`` under its own
session (it survives the SSH connection closing).  A node first does its own share of the items, then helps
with what is left, so a node that dies costs only the items it had in flight.  See ``runstate`` for where
the run's record, logs, heartbeats and exit files live.

Stages: ``--then WORKLOAD`` keeps the next stage in the run record (``then``); once the run is complete the head
starts it over the run's output folder and names it in the record (``next_run``), see ``run_stages``.
"""
from __future__ import annotations

import shlex
import time

from invoke import Task, task
from invoke.exceptions import Exit
from rich.console import Console

from playbooks.engines.errors import EngineError
from playbooks.engines.launch import node_command, preflight, workload_opts  # noqa: F401 - run.node_command, too
from playbooks.runs import buckets
from playbooks.runs import disk as rundisk
from playbooks.fleet import fleet_name, nodes_or_exit, provider_of
from playbooks.mount import mount_all
from playbooks.fs import safefs
from playbooks.measure.profiles import node_env
from playbooks.runs import state as runstate
from playbooks.runs.ids import new_run_id
from playbooks.settings import setting
from playbooks.settings.defaults import shared_root
from playbooks.settings.errors import user_errors
from playbooks.supervise import node_env_extra
from playbooks.ssh.fanout import fan_out, q, run_checked, show_failures

console = Console()


def run_paths(src: str, dst: str) -> tuple[str, str]:
    """--src / --dst: both in a bucket (``runs/buckets.py``: s3://bucket/prefix), else both relative paths that
    stay below the shared root."""
    if buckets.is_bucket(src) or buckets.is_bucket(dst):
        return buckets.check_pair(src, dst)
    return safefs.rel_path(src, "--src"), safefs.rel_path(dst, "--dst")


def start(c, name: str, nodes, workload: str, src: str, dst: str, args: str, provider: str = "",
          then: dict | None = None) -> dict:
    src, dst = run_paths(src, dst)
    bucket = buckets.is_bucket(src)   # issue 14: the nodes read and write the bucket; the run state stays on disk
    root = shared_root(c)
    wl, opts, extra = workload_opts(workload, *((src, dst) if bucket else (str(root / src), str(root / dst))), args)
    disk = rundisk.shared_disk(c, provider, name)   # here, or on a head instance (written over SFTP)
    if bucket:
        buckets.check_source(c, wl, opts, src)      # one paged listing, with the operator's credentials
    elif getattr(wl, "needs_src", True) and not disk.is_dir(src):
        raise EngineError(f"source folder {src} does not exist in the shared root{disk.where}: put the inputs there "
                          "or pass --src")
    from playbooks.mount import mount_all   # issue 13: a dead mount is repaired before the run starts
    preflight(c, name, nodes, workload, repair=lambda dead: mount_all(c, name, dead, provider))
    if not bucket:
        disk.mkdirs(dst)
        disk.give_to_nodes(dst, tree=True)  # nodes write there as the head's SFTP user
    run_id = new_run_id(workload)
    record = {"run_id": run_id, "fleet": name, "provider": provider or setting(c, "fleet.provider"),
              "workload": workload, "src": src, "dst": dst, "args": args, "started_at": time.time(),
              "nodes": [{"name": n.name, "shard": i} for i, n in enumerate(nodes)],
              "shards": len(nodes)}   # issue 13: replacements join the run and keep its shard count
    if bucket and buckets.endpoint(c):
        record["s3_endpoint"] = buckets.endpoint(c)   # an address, never a credential (engines/launch.py)
    if then:
        record["then"] = then     # the next stage (stage_plan), started once this run is complete
    runstate.save_run(disk, record)
    for n in nodes:  # each node writes its own state folder
        disk.give_to_nodes(f"{runstate.run_rel(run_id)}/nodes/{n.name}")
    workers = setting(c, "local.cores_per_node") if record["provider"] == "local" else None
    env = node_env(c, record["provider"])   # a local node counts local.cores_per_node as its cores
    env.update(node_env_extra(c, record["provider"]))   # issue 13: claims' lost_after, preemption notices
    timeout = setting(c, "fleet.ssh_timeout")
    results = fan_out(c, name, nodes, lambda conn, n: int(run_checked(
        conn, node_command(n, record, record["nodes"][nodes.index(n)]["shard"], extra, workers, env), timeout)
        .split()[-1]), step="start")
    for r in results:
        for entry in record["nodes"]:
            if entry["name"] == r.node.name:
                entry["pid"] = r.value if r.ok else None
    runstate.save_run(disk, record, latest=True)
    started = sum(r.ok for r in results)
    seed_rate_window(disk, record, started)
    console.print(f"run {run_id}: {workload} started on {started}/{len(nodes)} node(s); "
                  f"watch it with `invoke progress --watch`")
    if show_failures(results):
        raise EngineError("the workload did not start on some nodes (see the table above)")
    return record


def seed_rate_window(disk, record: dict, started: int) -> None:
    """The first point of the run's rate window (``runs/eta.py``): at its start, what was settled already,
    ``started`` nodes working; so the first look after items appear has a rate."""
    from playbooks.runs import eta
    counts = disk.tally(record).counts or {}
    eta.observe(disk, runstate.run_rel(record["run_id"]), record["started_at"],
                counts.get("done", 0) + counts.get("failed", 0), started)


# ------------------------------------------------------------------------------------------------- stages
def stage_plan(workload: str, dst: str, then: str, then_dst: str, then_args: str) -> dict | None:
    """The next stage of ``--then`` as the run record keeps it: {"workload", "dst", "args"} (its src is this
    run's dst), checked before anything starts; None without --then."""
    if not then:
        return None
    fw = runstate.fleetwork()
    if then not in fw.available():
        raise Exit(f"--then {then!r}: no such workload (available: {', '.join(sorted(fw.available()))})")
    if not getattr(fw.load(then), "needs_src", True):
        raise Exit(f"--then {then}: that workload reads no input folder, so it cannot take {workload}'s outputs")
    then_dst = safefs.rel_path(then_dst or f"{dst}-{then}", "--then-dst")
    if then_dst == dst or then_dst.startswith(dst + "/") or dst.startswith(then_dst + "/"):
        raise Exit(f"--then-dst {then_dst!r} must be a folder apart from --dst {dst!r} (the second stage reads "
                   "the first one's outputs from there)")
    return {"workload": then, "dst": then_dst, "args": then_args}


def checked_plan(record: dict) -> dict | None:
    """A run record's next stage, read back from the shared disk: checked like the flags it came from."""
    plan = record.get("then")
    if not plan:
        return None
    try:
        if not isinstance(plan, dict) or not isinstance(plan.get("args", ""), str):
            raise safefs.Refused("it is not what `invoke run --then` writes")
        return stage_plan(record["workload"], record["dst"], str(plan.get("workload", "")),
                          str(plan.get("dst", "")), plan.get("args", ""))
    except (Exit, safefs.Refused) as exc:
        raise runstate.RunStateError(f"the next stage of run {record['run_id']} is not valid ({exc.message})") \
            from None


def start_next_stage(c, record: dict) -> dict | None:
    """Start the next stage of a complete run on the fleet's nodes as they are now (replacements included), its
    src being this run's dst; the run record names the new run (``next_run``) so that it starts once."""
    plan = checked_plan(record)
    if plan is None or record.get("next_run"):
        return None
    name, nodes = nodes_or_exit(c, record["fleet"], record.get("provider", ""))
    console.print(f"run {record['run_id']} is complete: starting its next stage, {plan['workload']} over "
                  f"{record['dst']} into {plan['dst']}", markup=False)
    nxt = start(c, name, nodes, plan["workload"], record["dst"], plan["dst"], plan["args"],
                record.get("provider", ""))
    record["next_run"] = nxt["run_id"]
    runstate.save_run(rundisk.of_record(c, record), record)
    return nxt


def run_stages(c, record: dict, until_done: bool, wait: bool, bounds: dict) -> None:
    """``--then``: the first stage to its end (supervised with --until-done, else watched as --wait does: a lost
    node stops here, before the second stage), then the second stage, waited for with --wait or supervised with
    --until-done, or left running."""
    if until_done:
        supervise_stages(c, record, **bounds)
        return
    from playbooks.progress import wait_until_finished
    snap = wait_until_finished(c, record)
    if snap["total"] - snap["done"] - snap["failed"] > 0:
        raise Exit(f"run {record['run_id']}: {snap['total'] - snap['done'] - snap['failed']} item(s) not done; "
                   "the next stage was not started (re-run the same command to finish both)")
    nxt = start_next_stage(c, record)
    if nxt is not None and wait:
        wait_until_finished(c, nxt)


class _RunTask(Task):
    """The run task's short flags, as invoke makes them, but never ``-h`` (that is help) or ``-`` (--then, added
    after the others, would take them)."""

    def arg_opts(self, name, default, taken_names):
        return super().arg_opts(name, default, set(taken_names) | {"h", "-"})


def supervise_stages(c, record: dict, **bounds) -> dict:
    """``--until-done`` (and ``--attach``) with stages: each stage supervised to its end, then the next one
    (``start_next_stage``, over this stage's output folder); attached to a stage whose next one runs already,
    it goes on with that one.  Returns the last stage's report."""
    from playbooks import supervise
    while True:
        report = supervise.supervise(c, record, **bounds)
        if record.get("next_run"):
            record = runstate.load_run(c, safefs.name(record["next_run"], "next_run"), record.get("provider", ""),
                                       record["fleet"])
            continue
        nxt = start_next_stage(c, record)
        if nxt is None:
            return report
        record = nxt


@task(klass=_RunTask, name="run", help={
    "workload": "which workload (a script in workloads/): resize, edges, features, gridsearch",
    "src": "input folder, relative to shared.root (default: job.src)",
    "dst": "output folder, relative to shared.root (default: job.dst)",
    "args": "extra workload arguments as ONE quoted string, e.g. --args '--size 64'",
    "wait": "show a progress bar and return when every node has finished or is lost",
    "name": "fleet name (default: fleet.name)",
    "provider": "local, gcp or aws (default: fleet.provider)",
    "engine": "local (default: one detached process per node) or dask (chunks of items on the cluster that "
              "`invoke dask.up` started; waits, with a progress bar; items per task: --args '--chunksize N')",
    "until_done": "supervise the run to its end: replace lost and preempted nodes (default: job.until_done)",
    "attach": "resume supervising a running run (the latest, or RUN_ID) instead of starting one",
    "max_replacements": "with --until-done: at most this many replacement nodes (default: job.max_replacements)",
    "budget_usd": "with --until-done: no new node once the projected cost would pass this (default: job.budget_usd)",
    "then": "a second stage (default engine): once this run is complete (every item done or failed, every node "
            "finished; it is waited for, or supervised with --until-done), run WORKLOAD over its output folder; "
            "the second stage is waited for with --wait, supervised with --until-done, else left running. Both "
            "stages skip what is done: the same command again finishes what is left",
    "then_dst": "with --then: the second stage's output folder (default: DST-WORKLOAD, e.g. out-edges)",
    "then_args": "with --then: the second stage's workload arguments, as ONE quoted string",
}, optional=["attach"])
@user_errors()
def run_(c, workload="", src="", dst="", args="", wait=False, name="", provider="", engine="local",
         until_done=False, attach=None, max_replacements=-1, budget_usd="", then="", then_dst="", then_args=""):
    """Start a workload on every node of the fleet, each on its share of the inputs (--then: and a second stage
    over its outputs once it is complete)."""
    job = c.config.job
    # --- issue 13: --attach / --until-done (playbooks/supervise.py)
    bounds = {"max_replacements": None if max_replacements < 0 else int(max_replacements),
              "budget_usd": None}
    if budget_usd != "":
        try:
            bounds["budget_usd"] = float(budget_usd)
        except ValueError:
            raise Exit(f"--budget-usd {budget_usd!r} is not a number of dollars: e.g. --budget-usd 5") from None
    if attach is not None:   # the run, and the stages after it (--then)
        return supervise_stages(c, runstate.load_run(c, "" if attach is True else str(attach), provider, name),
                                **bounds)
    until_done = until_done or setting(c, "job.until_done")
    if until_done and engine != "local":
        raise Exit("--until-done is for the default engine (--engine local)")
    # paths below the shared root: relative, never leaving it (checked once, here, for both engines)
    src, dst = run_paths(setting(c, "job.src", src), setting(c, "job.dst", dst))
    workload, args = setting(c, "job.workload", workload), setting(c, "job.args", args)
    if then and engine != "local":
        raise Exit("--then is for the default engine (--engine local)")
    plan = stage_plan(workload or job.workload, dst, then, then_dst, then_args)
    name, nodes = nodes_or_exit(c, name, provider)
    # --- engine choice (issue 6): everything else in this task is the local engine
    if engine not in ("local", "dask"):
        raise Exit(f"unknown engine {engine!r}: use --engine local or --engine dask")
    if engine == "dask" and buckets.is_bucket(src):
        raise Exit("--engine dask works on the shared disk: a bucket run (s3://) takes the default engine")
    if engine == "dask":
        from playbooks.engines import dask as dask_engine
        return dask_engine.run(c, name, nodes, workload or job.workload, src, dst, args or job.args, provider,
                               remount=lambda ns: mount_all(c, name, ns, provider))
    record = start(c, name, nodes, workload or job.workload, src, dst, args or job.args, provider, then=plan)
    if plan:
        return run_stages(c, record, until_done, wait, bounds)
    if until_done:
        from playbooks import supervise
        return supervise.supervise(c, record, **bounds)
    if wait:
        from playbooks.progress import wait_until_finished
        wait_until_finished(c, record)


@task(help={"name": "fleet name (default: fleet.name)", "provider": "local, gcp or aws (default: fleet.provider)",
            "run_id": "which run (default: the latest)"})
def stop(c, name="", provider="", run_id=""):
    """Stop the workload of a run on every node (the items in flight are redone next time)."""
    record = runstate.load_run(c, run_id, provider, name)
    name = fleet_name(c, name or record["fleet"])
    nodes = [n for n in provider_of(c, provider).list_nodes(c, name) if n.state == "running"]
    # the machine each live entry runs on (a cloud replacement may run on a reused name: supervise.machine_of);
    # never a pid of a replaced entry, whose machine may now run another process under that pid
    pids = {e.get("machine") or e["name"]: e.get("pid") for e in record["nodes"] if not e.get("replaced_by")}
    nodes = [n for n in nodes if pids.get(n.name)]
    if not nodes:
        console.print(f"run {record['run_id']}: no running node to stop")
        return
    timeout = setting(c, "fleet.ssh_timeout")
    results = fan_out(c, name, nodes, lambda conn, n: run_checked(
        conn, f"kill -TERM -- -{int(pids[n.name])} 2>/dev/null; sleep 0.5; "
              f"kill -KILL -- -{int(pids[n.name])} 2>/dev/null; true", timeout), step="stop")
    console.print(f"run {record['run_id']}: stopped on {sum(r.ok for r in results)}/{len(nodes)} node(s)")
    show_failures(results)
