"""The jobs of a Batch run: one container job per hash-prefix shard, each running ``python workloads/<w>.py
--src s3://... --dst s3://... --shard k/N --threads T`` (the workload itself, on object-store paths through
``workloads/fw_objstore.py``), and with ``then`` one second-stage job per shard that depends only on the same shard of
the first stage (AWS allows at most 20 ``dependsOn`` per job; this uses 1).  ``status`` summarises the queue's
jobs by state, per run, and lists the failures."""
from __future__ import annotations

import shlex
from concurrent.futures import ThreadPoolExecutor

from rich.console import Console
from rich.table import Table
from rich.text import Text

from playbooks.engines.batch.aws import STATES, clients, job_definitions, list_jobs, names, queue, split_s3
from playbooks.engines.errors import EngineError
from playbooks.engines.plan import WARN_SHARE, job_line
from playbooks.measure import profiles
from playbooks.runs import state as runstate
from playbooks.runs.ids import STAMP_PARTS, new_run_id
from playbooks.settings import setting

console = Console()
err = Console(stderr=True)

MAX_DEPENDS_ON = 20
plan_line = job_line    # the Batch engine's plan line (engines/plan.py)

def job_command(workload: str, src: str, dst: str, shard: int, shards: int, threads: int, args: str) -> list[str]:
    """The container command of one shard job (what the image runs from its /app working directory)."""
    return ["python", f"workloads/{workload}.py", "--src", src, "--dst", dst,
            "--shard", f"{shard}/{shards}", "--threads", str(threads), *shlex.split(args)]


def count_items(c, workload: str, src: str, args: str) -> int | None:
    """One listing of the source prefix (the head needs fsspec/s3fs for it); None when it cannot list."""
    fw = runstate.fleetwork()
    try:
        import fw_objstore  # workloads/ is on the path once fleetwork is imported
        wl = fw.load(workload)
        opts = wl.parse_args(["--src", src, "--dst", src + "-probe", *shlex.split(args)])
        return len(fw_objstore.list_items(wl, src, opts))
    except Exception:  # noqa: BLE001 - the plan then says "unknown"
        return None


def item_seconds(c, workload: str) -> tuple[float, str]:
    """batch.item_seconds, else the measured time per item of the workload (``invoke bench --node`` on an
    aws.instance_type node, else this machine's profile): with a measured figure the overhead warning is on by
    default.  (0.0, "") when nothing is known."""
    explicit = setting(c, "batch.item_seconds")
    if explicit:
        return explicit, ""
    measured, source = profiles.item_seconds(c, "aws", setting(c, "aws.instance_type"), workload)
    return (measured, source) if measured else (0.0, "")


def submit(c, workload: str, src: str = "", dst: str = "", shards: int = 0, then: str = "", then_dst: str = "",
           args: str = "", then_args: str = "", run_id: str = "") -> dict:
    src = src or setting(c, "batch.src")
    dst = dst or setting(c, "batch.dst")
    for url, flag in ((src, "--src"), (dst, "--dst")):
        if not url:
            raise EngineError(f"say where: {flag} s3://bucket/prefix (or batch.{flag[2:]})")
        split_s3(url)
    fw = runstate.fleetwork()
    for w in filter(None, (workload, then)):
        if w not in fw.available():
            raise EngineError(f"unknown workload {w!r}: choose one of {', '.join(fw.available())}")
    shards = int(shards or setting(c, "batch.shards"))
    if shards < 1:
        raise EngineError("--shards must be >= 1")
    then_dst = then_dst or (f"{dst.rstrip('/')}-{then}" if then else "")
    threads = setting(c, "batch.threads")
    batch, _iam, _ec2 = clients(c)
    n = names(c)
    q = queue(batch, n["queue"])
    if q is None or not job_definitions(batch, n["jobdef"]):
        raise EngineError("no job queue or job definition: run `invoke batch.setup` first")
    items = count_items(c, workload, src, args)
    item_s, measured = item_seconds(c, workload)
    line, share = plan_line(items, shards, setting(c, "batch.job_start_s"), item_s, threads)
    console.print(line + (f"; then {then}: {shards} dependent job(s), one per shard" if then else "")
                  + (f"; per item {item_s * 1e3:.2f} ms, {measured}" if measured else ""))
    if share is not None and share > WARN_SHARE:
        err.print(f"[yellow]warning: job start would be {share:.0%} of the work (> {WARN_SHARE:.0%}): "
                  f"use fewer shards (--shards {max(1, shards // 4)})[/]")
    run_id = run_id or new_run_id()

    def one(k: int) -> dict:
        first_cmd = job_command(workload, src, dst, k, shards, threads, args)
        first = batch.submit_job(jobName=f"fb-{run_id}-{workload}-{k}", jobQueue=n["queue"],
                                 jobDefinition=n["jobdef"], containerOverrides={"command": first_cmd},
                                 tags={"fleetbook-run": run_id, "fleetbook-stage": "1"})
        entry = {"shard": k, "job_id": first["jobId"], "command": first_cmd}
        if then:
            deps = [{"jobId": first["jobId"]}]  # the same shard of the first stage only (AWS: <= 20)
            second_cmd = job_command(then, dst, then_dst, k, shards, threads, then_args)
            second = batch.submit_job(jobName=f"fb-{run_id}-{then}-{k}", jobQueue=n["queue"],
                                      jobDefinition=n["jobdef"], containerOverrides={"command": second_cmd},
                                      dependsOn=deps, tags={"fleetbook-run": run_id, "fleetbook-stage": "2"})
            entry.update(then_job_id=second["jobId"], then_command=second_cmd)
        return entry

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="batch-submit") as pool:
        jobs = list(pool.map(one, range(shards)))
    console.print(f"batch: run {run_id}: submitted {len(jobs) * (2 if then else 1)} job(s) to {n['queue']}; "
                  f"`invoke batch.status --run-id {run_id}`")
    return {"run_id": run_id, "jobs": jobs, "items": items, "shards": shards}


def run_of(job_name: str) -> str:
    """``fb-<date>-<time>-<hex>-<workload>-<k>`` -> ``<date>-<time>-<hex>``."""
    parts = job_name.split("-")
    return "-".join(parts[1:1 + STAMP_PARTS]) if len(parts) >= STAMP_PARTS + 3 and parts[0] == "fb" else "?"


def summarise(jobs_by_state: dict[str, list[dict]], run_id: str = "") -> dict:
    """{run: {state: count}} and the failures (name, reason), from list_jobs pages."""
    runs: dict[str, dict[str, int]] = {}
    failures = []
    for state, jobs in jobs_by_state.items():
        for job in jobs:
            rid = run_of(job.get("jobName", ""))
            if run_id and rid != run_id:
                continue
            runs.setdefault(rid, {s: 0 for s in STATES})[state] += 1
            if state == "FAILED":
                failures.append({"run": rid, "job": job.get("jobName", ""), "job_id": job.get("jobId", ""),
                                 "reason": job.get("statusReason", "")
                                 or (job.get("container") or {}).get("reason", "")})
    return {"runs": runs, "failures": failures}


def status(c, run_id: str = "") -> dict:
    batch, _iam, _ec2 = clients(c)
    n = names(c)
    if queue(batch, n["queue"]) is None:
        raise EngineError("no job queue: run `invoke batch.setup` first")
    summary = summarise({s: list_jobs(batch, n["queue"], s) for s in STATES}, run_id)
    if not summary["runs"]:
        console.print(f"batch: no jobs in {n['queue']}" + (f" for run {run_id}" if run_id else ""))
        return summary
    table = Table(title=f"jobs in {n['queue']}", title_justify="left")
    table.add_column("run")
    for s in STATES:
        table.add_column(s.lower(), justify="right")
    for rid in sorted(summary["runs"], reverse=True):
        table.add_row(rid, *(str(summary["runs"][rid][s]) for s in STATES))
    console.print(table)
    if summary["failures"]:
        ft = Table(title=f"{len(summary['failures'])} failed job(s)", title_justify="left")
        for col in ("run", "job", "reason"):
            ft.add_column(col)
        for f in summary["failures"][:50]:
            ft.add_row(*(Text(str(x)) for x in (f["run"], f["job"], f["reason"][:100])))  # data, not markup
        console.print(ft)
    return summary
