"""The Dask engine: a ``dask scheduler`` on the head, ``dask worker`` processes on every node, chunks of items.

``up`` starts the scheduler on the head (detached, its own session) and, through the same bounded Fabric
fan-out as ``run``, one ``dask worker`` per node (``--nworkers`` processes of ``--nthreads`` threads), detached,
with the node's interpreter and ``<workdir>/workloads`` on its path.  What was started is recorded in
``<fleet state>/dask.json`` (address, dashboard, scheduler pid, one worker process group per node); ``down``
stops exactly that.

``run`` lists the items on the head (its own disk), drops those already done (one scan of the destination),
cuts the rest into CHUNKS and submits one task per chunk; each task calls ``fleetwork.run_items`` on its chunk
with paths below the node's mountpoint (skip-if-done, atomic writes: the local engine and this one are
interchangeable and restartable).  Results stream back with ``as_completed`` and a bounded number of tasks in
flight; a lost worker's chunks are rescheduled by Dask on the others.
"""
from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from invoke.exceptions import Exit
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from playbooks.ssh import sftp_head as local_head
from playbooks.ssh import daemons as procs
from playbooks.runs import state as runstate
from playbooks.fs import safefs
from playbooks.settings.engines import ENGINE_DEFAULTS
from playbooks.settings.defaults import state_dir
from playbooks.providers.local import port_free
from playbooks.ssh.fanout import fan_out, q, run_checked, show_failures

console = Console()
err = Console(stderr=True)

DASK_DEFAULTS = ENGINE_DEFAULTS["dask"]
FALLBACK_OVERHEAD_US = 1859.0    # LocalCluster client.map per task on a 2-core VM (DESIGN.md 4)
WARN_SHARE = 0.10


def setting(c, key: str):
    """``c.config.dask.<key>``, or its default for a context built without the project's settings."""
    sub = c.config.get("dask") or {}
    value = sub.get(key, None) if hasattr(sub, "get") else None
    return DASK_DEFAULTS[key] if value is None else value


def state_file(c, fleet: str) -> Path:
    """Beside the fleet's folder, not in it: a torn-down fleet must not hide a scheduler still running."""
    return state_dir(c) / f"dask-{fleet}" / "dask.json"


def read_state(c, fleet: str) -> dict | None:
    return runstate.read_json(state_file(c, fleet))


def scheduler_alive(state: dict | None):
    """The scheduler process of ``state`` if it still runs (a recycled pid is not ours)."""
    if not state:
        return None
    needles = ("dask_scheduler", f"--port {state.get('port')}")
    return procs.ours(state.get("scheduler_pid"), lambda proc: all(n in " ".join(proc.cmdline()) for n in needles))


def scheduler_host(c, fleet: str, provider: str) -> str:
    host = str(setting(c, "scheduler_host"))
    if host:
        return host
    if provider == "local":
        return "127.0.0.1"  # every local node shares the head's network namespace
    # a cloud node reaches the head only through its reverse SSH tunnel (sshfs); Dask needs both directions
    raise Exit("dask on a cloud fleet: set dask.scheduler_host to an address of this machine that the nodes "
               "can reach and that can reach them (a VPN or the same VPC), e.g. INVOKE_DASK_SCHEDULER_HOST=10.0.0.5")


def dashboard_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("bokeh") is not None


def scheduler_command(host: str, port: int, dashboard_port: int, log_dir: Path, idle_timeout: str = "") -> list[str]:
    argv = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", host, "--port", str(port),
            "--scheduler-file", str(log_dir / "scheduler.json")]
    if idle_timeout:
        argv += ["--idle-timeout", str(idle_timeout)]
    argv += ["--dashboard-address", f"{host}:{dashboard_port}"] if dashboard_available() else ["--no-dashboard"]
    return argv


def start_scheduler(argv: list[str], log: Path) -> int:
    """Start the scheduler detached (its own session, nobody's child once the launcher shell exits)."""
    return procs.detach(argv, log)


def wait_port(host: str, port: int, pid: int, log: Path, timeout: float) -> None:
    import psutil
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            pass
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    raise Exit(f"the Dask scheduler did not start on {host}:{port}: {tail[0] if tail else 'no log'} (see {log})")


def worker_command(node, address: str, nworkers: int, nthreads: int, local: bool) -> str:
    """Shell command that starts ``dask worker`` on the node, detached, and prints its process group id."""
    wd = node.workdir
    scratch = f"{wd}/.dask"
    argv = [node.python, "-m", "distributed.cli.dask_worker", address, "--nworkers", str(nworkers),
            "--nthreads", str(nthreads), "--name", node.name, "--local-directory", scratch, "--no-dashboard",
            "--death-timeout", "60"]
    if local:
        argv += ["--host", node.host]  # a local node is its own loopback address, like a machine
    env = (f"FLEETBOOK_MOUNT={q(node.mountpoint)} FLEETBOOK_NODE_NAME={q(node.name)} "
           f"PYTHONPATH={q(wd + '/workloads')}")
    return (f"cd {q(wd)} && mkdir -p {q(scratch)} && {env} setsid nohup {shlex.join(argv)} "
            f"> {q(scratch + '/worker.log')} 2>&1 < /dev/null & echo $!")


def stop_group_command(pid: int, grace: float = 5.0) -> str:
    """Shell: SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL what is left."""
    steps = int(grace / 0.1)
    return (f"kill -TERM -- -{pid} 2>/dev/null || exit 0; i=0; while [ $i -lt {steps} ]; do "
            f"kill -0 -- -{pid} 2>/dev/null || exit 0; sleep 0.1; i=$((i+1)); done; "
            f"kill -KILL -- -{pid} 2>/dev/null; true")


def node_cores(c, conn, node, provider: str, timeout: float) -> int:
    if provider == "local":
        return max(1, int(c.config.local.cores_per_node))
    return max(1, int(run_checked(conn, "nproc", timeout).strip() or 1))


def connect_client(address: str, timeout: float = 10.0):
    from distributed import Client
    return Client(address, timeout=f"{timeout}s", set_as_default=False)


# ---------------------------------------------------------------------------------------------------- up/down

def up(c, name: str, nodes, provider: str, nworkers: int = 0, port: int = 0) -> dict:
    from playbooks.run import preflight
    provider = provider or c.config.fleet.provider
    state = read_state(c, name)
    if scheduler_alive(state):
        console.print(f"dask: already up for fleet {name} at {state['address']} "
                      f"({len(state['workers'])} node(s)); `invoke dask.down` first to change it")
        return state
    if state:  # a scheduler that died (idle timeout, reboot): its workers must not join the new one twice
        down(c, name, nodes)
    host = scheduler_host(c, name, provider)
    port = int(port or setting(c, "port"))
    dport = int(setting(c, "dashboard_port"))
    for p, what in ((port, "dask.port"), (dport, "dask.dashboard_port")):
        if not port_free(host, p) and (p == port or dashboard_available()):
            raise Exit(f"port {p} on {host} is taken: choose another with {what} "
                       f"(e.g. INVOKE_DASK_{what.split('.')[1].upper()}={p + 10}) or `invoke dask.down`")
    preflight(c, name, nodes, "fleetwork")  # mounted and deployed, else a one-line error
    log_dir = state_file(c, name).parent
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "scheduler.log"
    timeout = float(setting(c, "start_timeout"))
    pid = start_scheduler(scheduler_command(host, port, dport, log_dir, str(setting(c, "idle_timeout") or "")), log)
    address = f"tcp://{host}:{port}"
    state = {"fleet": name, "provider": provider, "address": address, "host": host, "port": port,
             "dashboard": f"http://{host}:{dport}/status" if dashboard_available() else None,
             "scheduler_pid": pid, "started_at": time.time(), "workers": {}}
    runstate.write_json(state_file(c, name), state)  # written at once: `dask.down` can clean a half start
    wait_port(host, port, pid, log, timeout)

    nthreads = int(setting(c, "nthreads"))
    ssh_timeout = float(c.config.fleet.ssh_timeout)

    def start(conn, node):
        n = int(nworkers or setting(c, "nworkers") or node_cores(c, conn, node, provider, ssh_timeout))
        pgid = int(run_checked(conn, worker_command(node, address, n, nthreads, provider == "local"),
                               ssh_timeout).split()[-1])
        return {"pid": pgid, "nworkers": n}

    results = fan_out(c, name, nodes, start, step="dask-worker")
    state["workers"] = {r.node.name: r.value for r in results if r.ok}
    runstate.write_json(state_file(c, name), state)
    failed = show_failures(results)
    expected = sum(w["nworkers"] for w in state["workers"].values())
    with connect_client(address, timeout) as client:
        try:
            client.wait_for_workers(expected, timeout=timeout)
        except TimeoutError:
            have = len(client.scheduler_info(n_workers=-1)["workers"])
            raise Exit(f"only {have}/{expected} Dask worker(s) joined {address} in {timeout:.0f} s: see "
                       f"<node workdir>/.dask/worker.log on the nodes; `invoke dask.down --name {name}` cleans up")
        threads = sum(w["nthreads"] for w in client.scheduler_info(n_workers=-1)["workers"].values())
    console.print(f"dask: scheduler {address}  ({expected} worker process(es), {threads} thread(s) on "
                  f"{len(state['workers'])} node(s))")
    console.print(f"dask: dashboard {state['dashboard']}" if state["dashboard"]
                  else "dask: no dashboard (install bokeh on the head for one)")
    if failed:
        raise Exit("dask workers did not start on some nodes (see the table above)")
    return state


def down(c, name: str, nodes) -> int:
    """Stop the workers (one process group per node) and the scheduler; returns how many things it stopped."""
    import psutil
    state = read_state(c, name)
    if not state:
        console.print(f"dask: nothing running for fleet {name}")
        return 0
    stopped = 0
    groups = state.get("workers", {})
    targets = [n for n in nodes if n.name in groups]
    if targets:
        results = fan_out(c, name, targets, lambda conn, n: run_checked(
            conn, stop_group_command(int(groups[n.name]["pid"])), float(c.config.fleet.ssh_timeout) + 10),
            step="dask-stop")
        stopped += sum(r.ok for r in results)
        show_failures(results)
    if state.get("provider") == "local":  # a node whose record was lost: its worker still carries the marker
        stray = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if ("dask_worker" in " ".join(proc.info["cmdline"] or [])
                        and proc.environ().get("FLEETBOOK_NODE", "").startswith(name + "/")):
                    stray.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        procs.kill_all(stray)
    sched = scheduler_alive(state)
    if sched:
        procs.kill_all(procs.kill_all([sched], signal.SIGTERM, timeout=10))
        stopped += 1
    shutil.rmtree(state_file(c, name).parent, ignore_errors=True)
    console.print(f"dask: stopped the scheduler {state['address']} and the workers of "
                  f"{len(targets)} node(s)")
    return stopped


# ---------------------------------------------------------------------------------------------------- costs

def measure_overhead_us(client, threads: int) -> float:
    """Dask's own cost per task on this cluster: wall time of N no-op tasks / N (scheduler round trips)."""
    import cloudpickle

    from playbooks.engines import dask_chunk
    cloudpickle.register_pickle_by_value(dask_chunk)
    n = max(20, 4 * threads)
    t0 = time.perf_counter()
    futures = client.map(dask_chunk.noop, range(n), pure=False, key=[f"fb-noop-{secrets.token_hex(4)}-{i}"
                                                                   for i in range(n)])
    client.gather(futures)
    elapsed = time.perf_counter() - t0
    del futures
    return elapsed / n * 1e6


def time_one_item(wl, item: str, src: str, opts) -> float | None:
    """Seconds to process one item on the head, output thrown away (None when it cannot run here)."""
    times = []
    with tempfile.TemporaryDirectory(prefix="fleetbook-probe-") as tmp:
        try:
            wl.setup_worker(opts)
            runstate.fleetwork().check_sources(wl, item, src, opts)   # no link out of --src, here as anywhere
            for k in range(2):  # best of two: the first call also pays the workload's imports
                t0 = time.perf_counter()
                wl.process(item, src, os.path.join(tmp, str(k)), opts)
                times.append(time.perf_counter() - t0)
        except Exception:  # noqa: BLE001 - a probe that fails just leaves the item time unknown
            pass
    return min(times) if times else None


def overhead_share(overhead_s: float, per_task_work_s: float | None) -> float | None:
    if per_task_work_s is None:
        return None
    total = overhead_s + per_task_work_s
    return overhead_s / total if total > 0 else None


def plan_line(engine: str, items: int, tasks: int, chunk: int, overhead_s: float, item_s: float | None,
              what: str = "task") -> tuple[str, float | None]:
    share = overhead_share(overhead_s, None if item_s is None else chunk * item_s)
    line = (f"{engine}: {items} item(s) -> {tasks} {what}(s) of up to {chunk} item(s); per-{what} overhead "
            f"{overhead_s * 1e3:.1f} ms, item {'unknown' if item_s is None else f'{item_s * 1e3:.1f} ms'}; "
            f"expected overhead share {'unknown' if share is None else f'{share:.1%}'}")
    return line, share


def plan(c, wl, opts, todo: list[str], threads: int, overhead_us: float, item_s: float | None) -> int:
    """Items per task: dask.chunksize, else the workload's --chunksize, else fleetwork.choose_chunksize."""
    fw = runstate.fleetwork()
    chunk = int(setting(c, "chunksize") or getattr(opts, "chunksize", None) or 0)
    if not chunk:
        chunk = fw.choose_chunksize(len(todo), threads, item_s, overhead_us)
    return max(1, chunk)


# ---------------------------------------------------------------------------------------------------- run

def run(c, name: str, nodes, workload: str, src: str, dst: str, args: str, provider: str = "",
        on_result=None) -> dict:
    """Run the workload on the fleet's Dask cluster in chunks; returns the run's totals.

    ``on_result(summary, client)`` (optional) is called after every finished chunk (tests use it to kill a node).
    """
    from playbooks.run import workload_opts

    state = read_state(c, name)
    if not scheduler_alive(state):
        raise Exit(f"no Dask cluster for fleet {name}: start one with `invoke dask.up --name {name}`")
    fw = runstate.fleetwork()
    disk = runstate.local_disk(c)
    src, dst = safefs.rel_path(src, "--src"), safefs.rel_path(dst, "--dst")
    src_abs, dst_abs = str(disk.path / src), str(disk.path / dst)
    wl, opts, extra = workload_opts(workload, src_abs, dst_abs, args)
    if getattr(wl, "needs_src", True) and not disk.is_dir(src):
        raise Exit(f"source folder {src_abs} does not exist: put the inputs there or pass --src")
    disk.mkdirs(dst)
    local_head.give_to_nodes(c, dst, tree=True)  # the workers write there as the head's SFTP user

    # what is left, counted on the head's own disk: one listing of the inputs, one scan of the outputs
    items = wl.list_items(src_abs, opts)
    outputs = fw.scan_outputs(dst_abs)
    retry = bool(getattr(opts, "retry_failed", False))
    records = fw.read_failures(dst_abs)
    failures = {} if retry else records
    collisions = fw.find_collisions(wl, items, opts)
    todo = [i for i in items if i not in failures and (i in collisions or wl.output_for(i, opts) not in outputs)]
    retried = {i: records[i] for i in todo if i in records}  # --retry-failed: their records go with the chunk

    run_id = f"{workload}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    record = {"run_id": run_id, "fleet": name, "provider": provider or c.config.fleet.provider, "engine": "dask",
              "workload": workload, "src": src, "dst": dst, "args": args, "started_at": time.time(),
              "nodes": [{"name": "dask", "shard": 0}], "scheduler": state["address"],
              "mountpoint": nodes[0].mountpoint}
    runstate.save_run(disk, record, latest=True)

    totals = {"done": 0, "skipped": len(items) - len(todo) - sum(1 for i in items if i in failures),
              "failed": sum(1 for i in items if i in failures), "tasks": 0, "errors": []}
    t0 = time.time()

    lock = threading.Lock()  # the heartbeat thread and the result loop write the same files

    def beat(final: dict | None = None):
        elapsed = max(1e-9, time.time() - t0)
        with lock:
            runstate.write_node_file(c, run_id, "dask", "heartbeat.json", {
                "node": "dask", "done": totals["done"], "skipped": totals["skipped"], "failed": totals["failed"],
                "total": len(items), "rate_per_s": round(totals["done"] / elapsed, 3), "started_at": t0,
                "updated_at": time.time()})
            if final is not None:
                runstate.write_node_file(c, run_id, "dask", "exit.json", final)

    stop_beats = threading.Event()

    def beat_loop():  # `invoke progress` sees a live run even when chunks take longer than job.lost_after
        while not stop_beats.wait(2.0):
            beat()

    beat()
    beats = threading.Thread(target=beat_loop, name="dask-heartbeat", daemon=True)
    beats.start()
    try:
        result = _run(c, name, state, wl, opts, extra, workload, src, dst, items, todo, collisions, retried, record,
                      disk, totals, beat, t0, on_result)
        # every chunk has ended: what killed workers left half-written goes
        from playbooks.runs.sweep import sweep_ended_run
        sweep_ended_run(c, record)
        return result
    finally:
        stop_beats.set()
        beats.join(5)
        if runstate.node_file(c, run_id, "dask", "exit.json") is None:  # stopped (Ctrl-C, lost scheduler)
            beat({"code": 1, "error": "the Dask run stopped before its end", "finished_at": time.time()})


def _run(c, name, state, wl, opts, extra, workload, src, dst, items, todo, collisions, retried, record, disk, totals,
         beat, t0, on_result) -> dict:
    import cloudpickle
    from distributed import as_completed

    from playbooks.engines import dask_chunk

    src_abs = str(disk.path / src)
    mountpoint = record["mountpoint"]
    retries = int(setting(c, "retries"))
    run_id = record["run_id"]
    with connect_client(state["address"]) as client:
        info = client.scheduler_info(n_workers=-1)["workers"]
        threads = sum(w["nthreads"] for w in info.values())
        if not threads:
            raise Exit(f"the Dask cluster {state['address']} has no workers: `invoke dask.down` then `dask.up`")
        cloudpickle.register_pickle_by_value(dask_chunk)  # the nodes have workloads/ on their path, not playbooks
        overhead_us = float(setting(c, "per_task_overhead_us") or 0) or measure_overhead_us(client, threads)
        item_s = float(setting(c, "item_seconds") or 0) or (time_one_item(wl, todo[0], src_abs, opts) if todo
                                                              else None)
        chunk = plan(c, wl, opts, todo, threads, overhead_us, item_s)
        chunks = [todo[k:k + chunk] for k in range(0, len(todo), chunk)]
        line, share = plan_line("dask", len(todo), len(chunks), chunk, overhead_us / 1e6, item_s)
        console.print(f"{line}; {len(items) - len(todo)} of {len(items)} already done or failed; "
                      f"{threads} worker thread(s) at {state['address']}")
        if share is not None and share > WARN_SHARE:
            err.print(f"[yellow]warning: Dask overhead would be {share:.0%} of the work (> {WARN_SHARE:.0%}): "
                      f"use bigger chunks (--args '--chunksize N' or dask.chunksize)[/]")
        record.update(tasks_planned=len(chunks), chunksize=chunk, per_task_overhead_us=round(overhead_us, 1),
                      item_seconds=item_s)
        runstate.save_run(disk, record)

        in_flight = int(setting(c, "max_in_flight") or 4 * threads)
        token = secrets.token_hex(3)
        task_seconds: list[float] = []

        def submit(k: int):
            part = chunks[k]
            return client.submit(dask_chunk.run_chunk, workload, part, src, dst, list(extra), mountpoint,
                                 {i: collisions[i] for i in part if i in collisions},
                                 {i: retried[i] for i in part if i in retried}, key=f"{run_id}-{token}-{k}",
                                 pure=False, retries=retries)

        pending = iter(range(len(chunks)))
        ac = as_completed([submit(k) for k in (next(pending) for _ in range(min(in_flight, len(chunks))))],
                          loop=client.loop)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[tasks]} task(s)"), TimeRemainingColumn(), console=console) as bar:
            job = bar.add_task(f"{workload} (dask)", total=len(todo) or None, tasks=0)
            for fut in ac:
                try:
                    summary = fut.result()
                except Exception as exc:  # noqa: BLE001 - after Dask's retries: report, keep going
                    totals["errors"].append(f"{fut.key}: {type(exc).__name__}: {exc}")
                    summary = None
                totals["tasks"] += 1
                if summary:
                    for k in ("done", "skipped", "failed"):
                        totals[k] += summary[k]
                    task_seconds.append(summary.get("task_seconds", 0.0))
                    bar.update(job, advance=summary["items"], tasks=totals["tasks"])
                fut.release()
                nxt = next(pending, None)
                if nxt is not None:
                    ac.add(submit(nxt))
                if on_result is not None and summary:
                    on_result(summary, client)
    elapsed = time.time() - t0
    result = {"run_id": run_id, "items": len(items), "todo": len(todo), "tasks": totals["tasks"],
              "tasks_planned": len(chunks), "chunksize": chunk, "done": totals["done"],
              "skipped": totals["skipped"], "failed": totals["failed"], "errors": totals["errors"],
              "per_task_overhead_us": overhead_us, "item_seconds": item_s, "seconds": round(elapsed, 3)}
    complete = totals["done"] + totals["skipped"] + totals["failed"] == len(items) and not totals["errors"]
    beat({"code": 0 if complete else 1, "summary": {k: result[k] for k in ("done", "skipped", "failed", "tasks")},
          "finished_at": time.time()})
    mean_task = sum(task_seconds) / len(task_seconds) if task_seconds else 0.0
    result["mean_task_seconds"] = round(mean_task, 4)
    console.print(f"run {run_id} (dask): {totals['done']} done, {totals['skipped']} skipped, "
                  f"{totals['failed']} failed in {totals['tasks']} task(s), {elapsed:.1f} s; "
                  f"a task took {mean_task * 1e3:.0f} ms on average on its worker")
    if totals["errors"]:
        for e in totals["errors"][:5]:
            err.print(f"  {e}")
        raise Exit(f"run {run_id}: {len(totals['errors'])} chunk(s) failed after {retries} retries; "
                   f"run it again to finish them (done items are skipped)")
    return result
