"""A run on the fleet's Dask cluster: the items left, cut into chunks, one task per chunk, results streamed back.

``run`` lists the items on the head (its own disk), drops those already done (one scan of the destination),
cuts the rest into CHUNKS and submits one task per chunk; each task calls ``fleetwork.run_items`` on its chunk
with paths below the node's mountpoint (skip-if-done, atomic writes: the local engine and this one are
interchangeable and restartable).  Results stream back with ``as_completed`` and a bounded number of tasks in
flight; a lost worker's chunks are rescheduled by Dask on the others.
"""
from __future__ import annotations

import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from playbooks.engines.dask.cluster import connect_client, read_state, scheduler_alive
from playbooks.engines.dask.mounts import MountWatch
from playbooks.engines.errors import EngineError
from playbooks.engines.launch import workload_opts
from playbooks.engines.plan import WARN_SHARE, chunk_line
from playbooks.fs import safefs
from playbooks.runs import state as runstate
from playbooks.runs.ids import new_run_id
from playbooks.settings import setting
from playbooks.ssh import sftp_head as local_head

console = Console()
err = Console(stderr=True)

plan_line = chunk_line    # the Dask engine's plan line (engines/plan.py)


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


def plan(c, opts, todo: list[str], threads: int, overhead_us: float, item_s: float | None) -> int:
    """Items per task: dask.chunksize, else the workload's --chunksize, else fleetwork.choose_chunksize."""
    chunk = int(setting(c, "dask.chunksize") or getattr(opts, "chunksize", None) or 0)
    if not chunk:
        chunk = runstate.fleetwork().choose_chunksize(len(todo), threads, item_s, overhead_us)
    return max(1, chunk)


# ---------------------------------------------------------------------------------------------------- the run

@dataclass
class DaskRun:
    """What ``run`` prepared on the head, and the totals the result loop adds to."""
    c: object
    address: str
    wl: object
    opts: object
    extra: list
    workload: str
    src: str                 # relative to the shared root
    dst: str
    items: list
    todo: list
    collisions: dict
    retried: dict            # --retry-failed: the failure records of the items retried, sent with their chunk
    record: dict             # the run's record (run state)
    disk: object             # the shared root on this machine
    t0: float = field(default_factory=time.time)
    threads: int = 0         # the cluster's worker threads, counted when the chunks are planned
    totals: dict = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.record["run_id"]


def _prepare(c, name: str, nodes, workload: str, src: str, dst: str, args: str, provider: str) -> DaskRun:
    """Check the cluster and the workload, count what is left, save the run's record."""
    state = read_state(c, name)
    if not scheduler_alive(state):
        raise EngineError(f"no Dask cluster for fleet {name}: start one with `invoke dask.up --name {name}`")
    fw = runstate.fleetwork()
    disk = runstate.local_disk(c)
    src, dst = safefs.rel_path(src, "--src"), safefs.rel_path(dst, "--dst")
    src_abs, dst_abs = str(disk.path / src), str(disk.path / dst)
    wl, opts, extra = workload_opts(workload, src_abs, dst_abs, args)
    if getattr(wl, "needs_src", True) and not disk.is_dir(src):
        raise EngineError(f"source folder {src_abs} does not exist: put the inputs there or pass --src")
    disk.mkdirs(dst)
    local_head.give_to_nodes(c, dst, tree=True)  # the workers write there as the head's SFTP user

    # what is left, counted on the head's own disk: one listing of the inputs, one scan of the outputs
    items = wl.list_items(src_abs, opts)
    outputs = fw.scan_outputs(dst_abs)
    records = fw.read_failures(dst_abs)
    failures = {} if getattr(opts, "retry_failed", False) else records
    collisions = fw.find_collisions(wl, items, opts)
    todo = [i for i in items if i not in failures and (i in collisions or wl.output_for(i, opts) not in outputs)]

    record = {"run_id": new_run_id(workload), "fleet": name, "provider": provider or setting(c, "fleet.provider"),
              "engine": "dask", "workload": workload, "src": src, "dst": dst, "args": args,
              "started_at": time.time(), "nodes": [{"name": "dask", "shard": 0}], "scheduler": state["address"],
              "mountpoint": nodes[0].mountpoint}
    runstate.save_run(disk, record, latest=True)
    failed = sum(1 for i in items if i in failures)
    return DaskRun(c, state["address"], wl, opts, extra, workload, src, dst, items, todo, collisions,
                   {i: records[i] for i in todo if i in records}, record, disk,
                   totals={"done": 0, "skipped": len(items) - len(todo) - failed, "failed": failed, "tasks": 0,
                           "errors": [], "chunks": []})


class _Heartbeat:
    """The run's heartbeat (and at the end its exit record) in the run state, as the local engine's nodes write
    them: `invoke progress` sees a live run even when chunks take longer than job.lost_after."""

    def __init__(self, r: DaskRun):
        self.r = r
        self.lock = threading.Lock()  # the heartbeat thread and the result loop write the same files
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="dask-heartbeat", daemon=True)

    def beat(self, final: dict | None = None) -> None:
        r, totals = self.r, self.r.totals
        elapsed = max(1e-9, time.time() - r.t0)
        with self.lock:
            runstate.write_node_file(r.c, r.run_id, "dask", "heartbeat.json", {
                "node": "dask", "done": totals["done"], "skipped": totals["skipped"], "failed": totals["failed"],
                "total": len(r.items), "rate_per_s": round(totals["done"] / elapsed, 3), "started_at": r.t0,
                "updated_at": time.time()})
            if final is not None:
                runstate.write_node_file(r.c, r.run_id, "dask", "exit.json", final)

    def _loop(self) -> None:
        while not self.stop.wait(2.0):
            self.beat()

    def __enter__(self):
        self.beat()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(5)
        if runstate.node_file(self.r.c, self.r.run_id, "dask", "exit.json") is None:  # Ctrl-C, lost scheduler
            self.beat({"code": 1, "error": "the Dask run stopped before its end", "finished_at": time.time()})


def run(c, name: str, nodes, workload: str, src: str, dst: str, args: str, provider: str = "",
        on_result=None, remount=None) -> dict:
    """Run the workload on the fleet's Dask cluster in chunks; returns the run's totals.

    ``on_result(summary, client)`` (optional) is called after every finished chunk (tests use it to kill a node).
    ``remount(nodes)`` (``run`` passes ``mount.mount_all``): how a node whose mount dropped is mounted again
    (``mounts.MountWatch``); without it such a node is left as it is.
    """
    r = _prepare(c, name, nodes, workload, src, dst, args, provider)
    with _Heartbeat(r) as heart:
        result = _run(r, heart, on_result, nodes, remount)
    # every chunk has ended: what killed workers left half-written goes
    from playbooks.runs.sweep import sweep_ended_run
    sweep_ended_run(c, r.record)
    return result


def _chunks(r: DaskRun, client) -> tuple[list[list[str]], int, float, float | None]:
    """Cut the items left into chunks by the measured (or configured) costs; print the plan and save it."""
    import cloudpickle

    from playbooks.engines import dask_chunk
    threads = sum(w["nthreads"] for w in client.scheduler_info(n_workers=-1)["workers"].values())
    if not threads:
        raise EngineError(f"the Dask cluster {r.address} has no workers: `invoke dask.down` then `dask.up`")
    r.threads = threads
    cloudpickle.register_pickle_by_value(dask_chunk)  # the nodes have workloads/ on their path, not playbooks
    overhead_us = setting(r.c, "dask.per_task_overhead_us") or measure_overhead_us(client, threads)
    item_s = setting(r.c, "dask.item_seconds") or (
        time_one_item(r.wl, r.todo[0], str(r.disk.path / r.src), r.opts) if r.todo else None)
    chunk = plan(r.c, r.opts, r.todo, threads, overhead_us, item_s)
    chunks = [r.todo[k:k + chunk] for k in range(0, len(r.todo), chunk)]
    line, share = plan_line("dask", len(r.todo), len(chunks), chunk, overhead_us / 1e6, item_s)
    console.print(f"{line}; {len(r.items) - len(r.todo)} of {len(r.items)} already done or failed; "
                  f"{threads} worker thread(s) at {r.address}")
    if share is not None and share > WARN_SHARE:
        err.print(f"[yellow]warning: Dask overhead would be {share:.0%} of the work (> {WARN_SHARE:.0%}): "
                  f"use bigger chunks (--args '--chunksize N' or dask.chunksize)[/]")
    r.record.update(tasks_planned=len(chunks), chunksize=chunk, per_task_overhead_us=round(overhead_us, 1),
                    item_seconds=item_s)
    runstate.save_run(r.disk, r.record)
    return chunks, chunk, overhead_us, item_s


def _stream(r: DaskRun, client, chunks: list[list[str]], retries: int, on_result) -> list[float]:
    """Submit the chunks, a bounded number in flight, and add up their results; returns each task's seconds."""
    from distributed import as_completed

    from playbooks.engines import dask_chunk
    in_flight = int(setting(r.c, "dask.max_in_flight") or 4 * r.threads)
    token = secrets.token_hex(3)
    mountpoint, totals = r.record["mountpoint"], r.totals
    task_seconds: list[float] = []

    def submit(k: int):
        part = chunks[k]
        return client.submit(dask_chunk.run_chunk, r.workload, part, r.src, r.dst, list(r.extra), mountpoint,
                             {i: r.collisions[i] for i in part if i in r.collisions},
                             {i: r.retried[i] for i in part if i in r.retried}, key=f"{r.run_id}-{token}-{k}",
                             pure=False, retries=retries)

    pending = iter(range(len(chunks)))
    ac = as_completed([submit(k) for k in (next(pending) for _ in range(min(in_flight, len(chunks))))],
                      loop=client.loop)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[tasks]} task(s)"), TimeRemainingColumn(), console=console) as bar:
        job = bar.add_task(f"{r.workload} (dask)", total=len(r.todo) or None, tasks=0)
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
                totals["chunks"].append({"node": summary.get("node"), "items": summary.get("items"),
                                         "ended_at": summary.get("ended_at")})
                bar.update(job, advance=summary["items"], tasks=totals["tasks"])
            fut.release()
            nxt = next(pending, None)
            if nxt is not None:
                ac.add(submit(nxt))
            if on_result is not None and summary:
                on_result(summary, client)
    return task_seconds


def _run(r: DaskRun, heart: _Heartbeat, on_result, nodes, remount) -> dict:
    retries = setting(r.c, "dask.retries")
    with connect_client(r.address) as client:
        chunks, chunk, overhead_us, item_s = _chunks(r, client)
        with MountWatch(remount, nodes, client, setting(r.c, "dask.mount_check_s")) as watch:
            task_seconds = _stream(r, client, chunks, retries, on_result)
    if watch.repairs:
        r.record["mount_repairs"] = watch.repairs
        runstate.save_run(r.disk, r.record)
    totals, run_id = r.totals, r.run_id
    elapsed = time.time() - r.t0
    result = {"run_id": run_id, "items": len(r.items), "todo": len(r.todo), "tasks": totals["tasks"],
              "tasks_planned": len(chunks), "chunksize": chunk, "done": totals["done"],
              "skipped": totals["skipped"], "failed": totals["failed"], "errors": totals["errors"],
              "per_task_overhead_us": overhead_us, "item_seconds": item_s, "seconds": round(elapsed, 3),
              "mount_repairs": watch.repairs, "chunks": totals["chunks"]}
    complete = totals["done"] + totals["skipped"] + totals["failed"] == len(r.items) and not totals["errors"]
    heart.beat({"code": 0 if complete else 1, "summary": {k: result[k] for k in ("done", "skipped", "failed", "tasks")},
                "finished_at": time.time()})
    mean_task = sum(task_seconds) / len(task_seconds) if task_seconds else 0.0
    result["mean_task_seconds"] = round(mean_task, 4)
    console.print(f"run {run_id} (dask): {totals['done']} done, {totals['skipped']} skipped, "
                  f"{totals['failed']} failed in {totals['tasks']} task(s), {elapsed:.1f} s; "
                  f"a task took {mean_task * 1e3:.0f} ms on average on its worker")
    if totals["errors"]:
        for e in totals["errors"][:5]:
            err.print(f"  {e}")
        raise EngineError(f"run {run_id}: {len(totals['errors'])} chunk(s) failed after {retries} retries; "
                          f"run it again to finish them (done items are skipped)")
    return result

