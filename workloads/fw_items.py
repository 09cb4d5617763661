"""fw_items: one item through its workload, and the records a run passes around: the ``Job`` every item of a run
shares, the ``Task`` of one item, the ``Result`` it gives.  Standard library only."""
from __future__ import annotations

import concurrent.futures as cf
import os
from dataclasses import dataclass
from typing import NamedTuple

import fw_claims
import fw_faults
import fw_notice
from fw_disk import FATAL_ERRNOS, destination_error, mount_lost
from fw_errors import MountLost, is_bad_input
from fw_failures import clear_failure, record_failure
from fw_inputs import check_sources


@dataclass(frozen=True)
class Job:
    """What every item of one run shares: the workload, its folders, its parsed options, the node's name."""
    workload: object
    src: str
    dst: str
    opts: object
    node: str


class Task(NamedTuple):
    """One item to do."""
    item: str
    recheck: bool = False       # check just before that its output is not there yet (a helped or known= item)
    had_record: bool = False    # it has a failure record, removed once it is done


class Result(NamedTuple):
    """What became of one item: status ``done``, ``skipped`` or ``failed`` (then ``reason``), or ``busy``
    (another node holds its claim: it comes back at the end of the pass)."""
    item: str
    status: str
    reason: str | None = None


def do_item(job: Job, task: Task) -> Result:
    """Run one item; a failure of the item is recorded, DestinationError for fatal errors of the destination."""
    workload, item, dst, opts = job.workload, task.item, job.dst, job.opts
    if task.recheck and os.path.exists(os.path.join(dst, workload.output_for(item, opts))):
        return Result(item, "skipped")
    # --- claims hook (workloads/fw_claims.py): one node at a time per item; "busy" = another holds it
    claim = _claim(job, item)
    if claim in ("busy", "skipped"):
        return Result(item, claim)
    try:
        return _do_claimed(job, task)
    finally:
        fw_claims.release(claim)          # over a dropped mount the claim stays: this process takes it back
    # --- end of the claims hook


def _claim(job: Job, item: str):
    """The claim's path, or "busy" (a live holder has it, or this node got a preemption notice), or "skipped"
    (its output appeared meanwhile)."""
    workload, dst, opts = job.workload, job.dst, job.opts
    runner = fw_faults._RUNNER.get("pid") or os.getpid()
    if fw_notice.stopping(runner):
        return "busy"
    if os.environ.get("FLEETBOOK_CLAIMS", "1") == "0":   # measuring only: the runner as it was before claims
        return ""
    try:
        claim = fw_claims.acquire(dst, item, runner_pid=runner, node=job.node, state_dir=getattr(opts, "state", None))
    except OSError as e:
        if e.errno in FATAL_ERRNOS:
            raise destination_error(e, dst, "cannot claim an item") from None
        raise
    if claim is None:
        return "busy"
    if os.path.exists(os.path.join(dst, workload.output_for(item, opts))):
        fw_claims.release(claim)
        return "skipped"
    fw_claims.item_delay()
    return claim


def _do_claimed(job: Job, task: Task) -> Result:
    workload, item, dst, opts = job.workload, task.item, job.dst, job.opts
    try:
        check_sources(workload, item, job.src, opts)
        workload.process(item, job.src, dst, opts)
    except Exception as e:  # noqa: BLE001 - an item never crashes the run
        lost = mount_lost(e, dst)      # a mount that stopped answering is never the item's fault
        if lost:
            raise MountLost(f"{lost} (item {item!r})") from None
        if is_bad_input(e):
            reason, detail = getattr(e, "reason", "bad-input"), getattr(e, "detail", str(e))
        elif isinstance(e, OSError) and e.errno in FATAL_ERRNOS:
            raise destination_error(e, dst) from None
        else:
            reason, detail = "error", f"{type(e).__name__}: {e}"
        try:
            record_failure(dst, item, reason, detail, job.node)
        except OSError as e2:
            raise destination_error(e2, dst, "cannot write a failure record") from None
        return Result(item, "failed", reason)
    if task.had_record:
        clear_failure(dst, item)
    return Result(item, "done")


def threaded(fn, tasks: list, threads: int):
    """``fn(task)`` for each task in order, ``threads`` at a time: for items that wait on the network (S3, a
    slow mount), where threads win over processes (see bench/test_threads.py)."""
    if threads <= 1:
        yield from map(fn, tasks)
        return
    with cf.ThreadPoolExecutor(threads, thread_name_prefix="fleetwork-io") as pool:
        step = threads * 4
        for k in range(0, len(tasks), step):
            yield from pool.map(fn, tasks[k:k + step])


def run_tasks(job: Job, tasks: list[Task]):
    """The results of ``tasks`` in order, ``--threads`` items at once in this process."""
    return threaded(lambda task: do_item(job, task), tasks, getattr(job.opts, "threads", 1) or 1)
