"""fw_runner: one node's run of a list of items (``run_items``), used by the command line and by an engine for
one chunk.  Standard library only.

* the outputs already present are found with ONE walk of the destination (or taken from the caller's ``known``
  listing), the temp files of dead processes of this host swept, the failure records read once;
* collision losers, done items and known failures are counted; the rest is done in shard order
  (``fw_shards.shard_order``): inline (``--workers 1``, or inside a daemon process) or on a pool (``fw_pool``),
  under claims (``fw_claims``): per block of items when the item count is known, whose state on the shared
  disk (held, done, partial) tells what other nodes did since the start scan, without a stat per item;
  the items others held come back until they are done or their holder is gone;
* ``--state DIR``: ``heartbeat.json`` every ~2 s and at the end (``fw_progress``); the summary is returned;
* the mount drops (``MountLost``: ENOTCONN, or EIO over sshfs while it reconnects): the items in flight are
  neither done nor failed; the runner waits for the mount (a ``statvfs`` every second, at most
  ``$FLEETBOOK_MOUNT_WAIT`` seconds, ``job.mount_wait``), then goes on with what is left; if it does not come
  back the run ends ``unhealthy`` (exit 4).  Its last words also go to ``$FLEETBOOK_LOCAL_STATE`` (a folder on
  the node's own disk: ``health.json``, and the exit file), where the head reads them over SSH.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

import fw_claims
import fw_faults
import fw_notice
import fw_progress
from fw_errors import DestinationError, MountLost
from fw_failures import FAILED_DIR, find_collisions, read_failed_dir, record_failure
from fw_items import Job, Task, run_tasks, with_blocks
from fw_machine import load_profile, machine_cores, profile_fits
from fw_outputs import HOST, scan, sweep_temps, write_json_if_can
from fw_pool import run_pool, plan_pool
from fw_progress import Progress, log
from fw_shards import parse_shard, shard_order
from fw_stop import Stopped, check_stop, stop_signal

SUMMARY_KEYS = ("done", "skipped", "failed", "seconds", "items_per_s")   # the last line on stdout, in order
CLAIM_RECHECK = 1.0                  # seconds between passes over the items other nodes held (fw_claims)
MOUNT_WAIT = 60.0                    # seconds a dropped mount may take to come back (default of $FLEETBOOK_MOUNT_WAIT)
MOUNT_PROBE_EVERY = 1.0              # seconds between two looks at a dropped mount
FRUITLESS_RESUMES = 5                # a mount that comes back this often in a row without one item done: unhealthy


def run_items(workload, items, src, dst, opts, *, state_dir=None, node=None, shard=None,
              collisions=None, progress_bar=None, known=None) -> dict:
    """Process ``items`` (skip-if-done, shard order, pool, failure records, heartbeats) and return the summary
    ``{"done","skipped","failed","seconds","items_per_s", ...}``.  Used by the CLI and by an engine for one
    chunk.  ``shard`` defaults to ``opts.shard``; ``collisions`` (loser -> winner, see find_collisions) to the
    collisions among ``items`` (an engine that splits a list should pass the collisions of the whole list).
    ``known=(outputs, failures)``: what the caller already listed (an engine that listed the destination once
    for all its chunks); then this chunk does not walk the destination again, and relies on the claims for
    what others did since: per block, their state (``fw_claims``); per item, a check of each item's output
    just before doing it (one stat per item)."""
    t_start = time.perf_counter()
    job = Job(workload, src, dst, opts, node or getattr(opts, "node", None) or HOST)
    state_dir = state_dir or getattr(opts, "state", None)
    shard = shard if shard is not None else parse_shard(getattr(opts, "shard", None))
    profile, profile_path, ignored = _fitting_profile(opts)
    if state_dir:
        os.makedirs(state_dir, exist_ok=True)
    os.makedirs(os.path.join(dst, FAILED_DIR), exist_ok=True)

    items = list(items)
    job = dataclasses.replace(job, total=len(items),     # issue 15: claims per block need the run's item count
                              token=fw_claims.run_token(),  # whose block markers this runner trusts
                              trust_fresh=bool(os.environ.get("FLEETBOOK_RUN")))  # by hand: its markers go
    outputs, failures = _listing(dst, known)
    if collisions is None:
        collisions = find_collisions(workload, items, opts)
    prog = Progress(len(items), job.node, state_dir, sys.stdout.isatty() if progress_bar is None else progress_bar)
    todo, known_failed = _triage(job, items, outputs, failures, collisions, prog)
    tasks = with_blocks(job, [t._replace(recheck=helped or known is not None)
                                   for t, helped in shard_order(todo, shard)])

    plan = plan_pool(opts, profile, len(tasks))
    info = {"workers": plan.workers, "start_method": plan.method if plan.workers > 1 else "inline",
            "chunksize": plan.chunksize, "profile": profile_path, "profile_ignored": ignored, "total": len(items),
            "todo": len(tasks), "known_failed": known_failed}
    prog.start()
    fw_progress.CURRENT[:] = [prog]
    error = None
    try:
        by_item = {t.item: t for t in tasks}
        fruitless, seen_before = 0, -1
        while True:
            try:
                if plan.workers == 1:
                    _run_inline(job, tasks, prog, info)
                else:
                    run_pool(job, tasks, prog, plan, info)
            except MountLost as lost:
                # --- mount hook: the items in flight are not failed; wait for the mount, then go on
                fruitless = fruitless + 1 if len(prog.seen) == seen_before else 0
                seen_before = len(prog.seen)
                if fruitless >= FRUITLESS_RESUMES or not ride_out(job, prog, str(lost), info):
                    raise
                tasks = [t._replace(recheck=True) for t in tasks if t.item not in prog.seen]
                continue
            # --- claims hook: the items other nodes held come back until they are done or their holder is gone
            if not prog.busy or fw_notice.stopping():
                break
            check_stop()
            time.sleep(CLAIM_RECHECK)
            tasks, prog.busy = [by_item.get(it, Task(it))._replace(recheck=True) for it in prog.busy], []
        if info["todo"] and not fw_notice.stopping():
            fw_claims.sweep(dst, state_dir, own_token="" if os.environ.get("FLEETBOOK_RUN") else job.token)
        if info.get("mount_recoveries"):
            _sweep_after_mount(dst)
    except MountLost as e:
        error = prog.error = f"{e}; it did not come back within {mount_wait():g} s"
        info["unhealthy"] = True
        last_words({"state": "unhealthy", "error": error, "node": job.node, "at": time.time()})
    except DestinationError as e:
        error = prog.error = str(e)
    except Stopped:
        pass
    finally:
        prog.stop()
    return _summary(prog, time.perf_counter() - t_start, info, error)


def mount_wait() -> float:
    try:
        return max(0.0, float(os.environ.get("FLEETBOOK_MOUNT_WAIT", MOUNT_WAIT)))
    except ValueError:
        return MOUNT_WAIT


def mount_answers(dst: str) -> bool:
    """Does the mount below ``dst`` answer again?  ``statvfs`` goes to the server every time (FUSE caches no
    statfs), unlike a stat that the kernel may answer from its attribute cache."""
    try:
        fw_faults.mount_down(dst)
        os.statvfs(dst)
        return True
    except OSError:
        return False


def last_words(rec: dict) -> None:
    """``$FLEETBOOK_LOCAL_STATE/health.json``: what this node says about itself, on its own disk (readable by
    the head over SSH when the shared disk's mount is gone)."""
    write_json_if_can(os.environ.get("FLEETBOOK_LOCAL_STATE"), "health.json", rec)


def _sweep_after_mount(dst: str) -> None:
    """The temp files that writes cut by a dropped mount left (this process's, and its dead workers'): one walk of
    the destination, only after a run that rode out a mount loss."""
    import fw_outputs
    for path in sorted(fw_outputs.LEFTOVER_TEMPS):
        try:
            os.unlink(path)
        except OSError:
            pass
    fw_outputs.LEFTOVER_TEMPS.clear()
    try:
        sweep_temps(scan(dst)[1])
    except OSError:
        pass


def ride_out(job: Job, prog: Progress, why: str, info: dict) -> bool:
    """Wait (bounded) for a dropped mount to answer again; True when it did (the run goes on)."""
    wait, t0 = mount_wait(), time.monotonic()
    since = time.time()
    log(job.opts, f"{why}; the items in flight are not failed; waiting up to {wait:g} s for the mount")
    last_words({"state": "mount-lost", "error": why, "since": since, "wait_s": wait, "node": job.node})
    while not mount_answers(job.dst):
        check_stop()                              # a stop signal or a preemption notice ends the wait
        if fw_notice.stopping() or time.monotonic() - t0 >= wait:
            return False
        time.sleep(MOUNT_PROBE_EVERY)
    took = time.monotonic() - t0
    info["mount_recoveries"] = info.get("mount_recoveries", 0) + 1
    info["mount_wait_s"] = round(info.get("mount_wait_s", 0.0) + took, 1)
    log(job.opts, f"the mount answers again after {took:.1f} s: going on")
    last_words({"state": "running", "recovered_from": why, "since": since, "recovered_at": time.time(),
                "node": job.node})
    prog.beat()
    return True


def _fitting_profile(opts) -> tuple[dict, str | None, str | None]:
    """(profile, its path, the path of a profile not used because it was made on another machine)."""
    profile, path = load_profile()
    if profile and not profile_fits(profile):   # made on another machine: its choices are not this one's
        log(opts, f"profile {path} was measured on {profile.get('cores')} cores and this machine has "
                  f"{machine_cores()}: not used")
        return {}, None, path
    return profile, path, None


def _listing(dst: str, known) -> tuple[set[str], dict[str, dict]]:
    """(outputs present, failure records): ONE walk of the destination (sweeping dead temps), or ``known``."""
    if known is not None:
        return set(known[0]), dict(known[1])
    outputs, temps = scan(dst)
    failures, failed_temps = read_failed_dir(dst)
    sweep_temps(temps + failed_temps)
    return outputs, failures


def _triage(job: Job, items: list[str], outputs: set[str], failures: dict, collisions: dict,
            prog: Progress) -> tuple[list[Task], int]:
    """Count the collision losers (recorded as failed), the done items and the known failures (unless
    ``--retry-failed``) on ``prog``; returns (the tasks to do in item order, how many failures were known)."""
    workload, opts = job.workload, job.opts
    retry = bool(getattr(opts, "retry_failed", False))
    known_failed = 0
    todo: list[Task] = []
    for item in items:
        if item in collisions:
            if item in failures and not retry:
                known_failed += 1
                prog.failed += 1
            else:
                record_failure(job.dst, item, "output-collision",
                               f"output {workload.output_for(item, opts)!r} already comes from {collisions[item]!r} "
                               "(the lexicographically first item wins)", job.node)
                prog.failed += 1
        elif workload.output_for(item, opts) in outputs:
            prog.skipped += 1
        elif item in failures and not retry:
            known_failed += 1
            prog.failed += 1
        else:
            todo.append(Task(item, had_record=item in failures))
    return todo, known_failed


def _run_inline(job: Job, tasks: list[Task], prog: Progress, info: dict) -> None:
    """``--workers 1``: the items in this process (``--threads`` at once)."""
    info["chunksize"] = 1
    log(job.opts, f"{job.workload.name}: {info['total']} items, {len(tasks)} to do, workers=1 (inline), "
                  f"profile={info['profile']}")
    job.workload.setup_worker(job.opts)
    prog.start_thread()
    for result in run_tasks(job, tasks):
        check_stop()
        prog.add(result.status, result.item)


def _summary(prog: Progress, seconds: float, info: dict, error: str | None) -> dict:
    summary = {"done": prog.done, "skipped": prog.skipped, "failed": prog.failed,
               "seconds": round(seconds, 3), "items_per_s": round(prog.done / seconds, 2) if seconds else 0.0}
    summary.update(info)
    summary["complete"] = summary["done"] + summary["skipped"] + summary["failed"] == info["total"] and not error
    if error:
        summary["error"] = error
    if info.get("unhealthy"):
        summary["complete"] = False
    if stop_signal() is not None:
        summary["stopped"] = stop_signal()
        summary["complete"] = False
    return summary
