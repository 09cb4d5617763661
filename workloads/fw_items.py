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
import fw_progress
from fw_disk import FATAL_ERRNOS, destination_error, mount_lost
from fw_errors import MountLost, is_bad_input
from fw_failures import clear_failure, record_failure
from fw_inputs import check_sources, forget_prefetched, prefetch
from fw_shards import parse_shard


@dataclass(frozen=True)
class Job:
    """What every item of one run shares: the workload, its folders, its parsed options, the node's name."""
    workload: object
    src: str
    dst: str
    opts: object
    node: str
    total: int = 0      # the run's item count: claims per block when known (fw_claims.block_of), else per item
    token: str = ""     # whose block markers this runner trusts (fw_claims.run_token); "": none, checks outputs
    trust_fresh: bool = True    # a block made from nothing needs no output check (fw_runner: inside a run,
                                # $FLEETBOOK_RUN, whose runners all keep their markers; not for a run by hand)


class Task(NamedTuple):
    """One item to do."""
    item: str
    recheck: bool = False       # per-item claims: check just before that its output is not there yet (a helped
                                # or known= item); in a claim block the block's state says it (fw_claims)
    had_record: bool = False    # it has a failure record, removed once it is done
    block: tuple = ()           # the items of the runner's tasks in its claim block (one tuple per block): once
                                # all are settled the block is marked done (empty: unknown, never marked done)


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
        return _after_claim(job, task)
    finally:
        fw_claims.release(claim)          # over a dropped mount the claim stays: this process takes it back
    # --- end of the claims hook


def do_block(job: Job, key: str, tasks: list[Task], ahead=None) -> list[Result]:
    """The items of one claim block (``fw_claims.block_of``) under one claim.  No stat per item over the mount:
    inside a run, a block made from nothing has no output to check (the runner's start scan left out what was
    done; ``Job.trust_fresh``: a runner by hand checks each output as before), a done
    marker of this run skips every item at once; only a block taken over from a holder that died, its own
    dropped mount or another run checks the outputs of the items it has no word on.  A block another worker of
    this runner holds (a pool chunk cut it in two) is busy: it comes back at the end of the pass.  At the end the claim becomes
    a done marker once every item of the runner's tasks in the block (``Task.block``) is settled (by this call,
    or as the previous holder's partial marker says), else a partial one (``fw_claims.settle``)."""
    claim = _claim(job, key, block=True)
    if claim in ("busy", fw_claims.SHARED):   # shared: another worker of this runner is on it; back once it ended
        return [Result(t.item, "busy") for t in tasks]
    if isinstance(claim, fw_claims.Done):
        return [Result(t.item, "failed", claim.failed[t.item]) if t.item in claim.failed
                else Result(t.item, "skipped") for t in tasks]
    held = claim if isinstance(claim, fw_claims.Held) else None
    check = held is not None and (not held.fresh or not job.trust_fresh)
    known = held.settled if held is not None else frozenset()
    results: list[Result] = []
    whole = False
    try:
        for task in tasks:
            if ahead is not None:
                ahead(task)
            if fw_notice.stopping(_runner()):
                results.append(Result(task.item, "busy"))
            elif task.item in known:
                results.append(Result(task.item, "skipped"))
            elif check and os.path.exists(os.path.join(job.dst, job.workload.output_for(task.item, job.opts))):
                results.append(Result(task.item, "skipped"))
            else:
                if claim:
                    fw_claims.item_delay()
                results.append(_do_claimed(job, task))
        whole = all(r.status != "busy" for r in results)
    except BaseException:
        if held is not None:
            try:
                _settle(job, held, known, results, False)
            except OSError:
                pass                      # the error on its way out is the one to report
        raise
    if held is not None:
        _settle(job, held, known, results, whole, tasks[0].block)
    return results


def _settle(job: Job, held, known: frozenset, results: list[Result], whole: bool, block: tuple = ()) -> None:
    settled = known | {r.item for r in results if r.status != "busy"}
    done = whole and bool(block) and settled.issuperset(block)
    try:
        fw_claims.settle(held, token=job.token, done=done, node=job.node, settled=settled,
                         failed={r.item: r.reason for r in results if r.status == "failed"})
    except OSError as e:
        if e.errno in FATAL_ERRNOS:
            raise destination_error(e, job.dst, "cannot mark a claim block") from None
        raise


def _runner() -> int:
    return fw_faults._RUNNER.get("pid") or os.getpid()


def _claim(job: Job, item: str, block: bool = False):
    """The claim's path (a block: ``fw_claims.acquire_block``'s answer), or "busy" (a live holder has it, or this
    node got a preemption notice), or "" (claims off).  ``block``: ``item`` is a block key."""
    dst, opts = job.dst, job.opts
    runner = _runner()
    if fw_notice.stopping(runner):
        return "busy"
    if os.environ.get("FLEETBOOK_CLAIMS", "1") == "0":   # measuring only: the runner as it was before claims
        return ""
    try:
        if block:
            claim = fw_claims.acquire_block(dst, item, token=job.token, runner_pid=runner, node=job.node,
                                            state_dir=getattr(opts, "state", None))
        else:
            claim = fw_claims.acquire(dst, item, runner_pid=runner, node=job.node,
                                      state_dir=getattr(opts, "state", None))
    except OSError as e:
        if e.errno in FATAL_ERRNOS:
            raise destination_error(e, dst, "cannot claim an item") from None
        raise
    return "busy" if claim is None else claim


def _after_claim(job: Job, task: Task) -> Result:
    """One item under its own claim: skipped when its output appeared meanwhile, else done."""
    if os.environ.get("FLEETBOOK_CLAIMS", "1") != "0":
        if os.path.exists(os.path.join(job.dst, job.workload.output_for(task.item, job.opts))):
            return Result(task.item, "skipped")
        fw_claims.item_delay()
    return _do_claimed(job, task)


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
    fw_progress.output_made()
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


def block_key(job: Job):
    """The function giving a task's claim block (None: a claim of its own) for this job."""
    if not job.total or os.environ.get("FLEETBOOK_CLAIMS", "1") == "0":
        return lambda task: None
    shard = parse_shard(getattr(job.opts, "shard", None))
    shards = shard[1] if shard else 1
    return lambda task: fw_claims.block_of(task.item, shards, job.total)


def with_blocks(job: Job, tasks: list[Task]) -> list[Task]:
    """``tasks`` with ``block`` set: the items of ``tasks`` in each one's claim block (one tuple per block)."""
    key = block_key(job)
    keys = [key(t) for t in tasks]
    members: dict = {}
    for t, k in zip(tasks, keys):
        if k is not None:
            members.setdefault(k, []).append(t.item)
    blocks = {k: tuple(v) for k, v in members.items()}
    return [t._replace(block=blocks[k]) if k is not None else t for t, k in zip(tasks, keys)]


def run_tasks(job: Job, tasks: list[Task]):
    """The results of ``tasks``, ``--threads`` claim blocks at once in this process: the tasks of one block
    together (in the order of the block's first task), the blocks' items in their order.  With one thread, the
    next item's source files are read in the background while an item computes (``fw_inputs.prefetch``)."""
    groups = fw_claims.group_by_block(list(tasks), block_key(job))
    threads = getattr(job.opts, "threads", 1) or 1
    order = [t for _key, members in groups for t in members]
    following = dict(zip((t.item for t in order), order[1:])) if threads == 1 and job.src else {}

    def ahead(task: Task) -> None:
        nxt = following.get(task.item)
        if nxt is not None:
            try:
                prefetch(job.src, job.workload.source_files(nxt.item, job.opts),
                         bool(getattr(job.opts, "follow_links", False)))
            except Exception:  # noqa: BLE001 - only a head start: the item reads its files itself
                pass

    def one(group):
        key, members = group
        if key is None:
            ahead(members[0])
            return [do_item(job, members[0])]
        return do_block(job, key, members, ahead)

    try:
        for results in threaded(one, groups, threads):
            yield from results
    finally:
        forget_prefetched()     # bytes read ahead for an item not done here are never served later
