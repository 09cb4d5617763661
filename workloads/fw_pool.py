"""fw_pool: a run's items on a process pool (``--workers``, ``--chunksize``, ``--start-method``).

The chunk size comes from ``--chunksize``, the profile, the workload's ``item_seconds_hint``, or else from timing
the first items one per task.  A bounded number of chunks is in flight.  When a worker dies (a segfault in a
decoder, the OOM killer), the items that were in flight are re-run one at a time in a one-worker pool: the one
that kills its worker again is recorded as failed (``worker-crashed``) and the rest of the run goes on.  On a stop
signal the chunks in flight may finish (for ``STOP_GRACE`` seconds).  Standard library only.
"""
from __future__ import annotations

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass

import fw_faults
from fw_errors import DestinationError
from fw_failures import record_failure
from fw_claims import group_by_block
from fw_items import Job, Result, Task, block_key, run_tasks
from fw_machine import DEFAULT_OVERHEAD_US, choose_chunksize, default_start_method, default_workers
from fw_progress import Progress, log
from fw_stop import Stopped, check_stop

STOP_GRACE = 10.0                    # seconds the chunks in flight may take to finish after SIGTERM


@dataclass(frozen=True)
class PoolPlan:
    """How a run uses this machine: ``workers`` processes started by ``method``; ``chunksize`` items per task
    (None: to be chosen); ``overhead`` microseconds of pool cost per task."""
    workers: int
    method: str
    chunksize: int | None
    overhead: float


def plan_pool(opts, profile: dict, n_tasks: int) -> PoolPlan:
    """The options first, then the (fitting) machine profile, then this machine's defaults."""
    workers = getattr(opts, "workers", None) or default_workers(profile)
    workers = max(1, min(workers, n_tasks)) if n_tasks else 1
    if multiprocessing.current_process().daemon:     # e.g. inside a Dask/multiprocessing worker: no children
        workers = 1
    method = getattr(opts, "start_method", None) or default_start_method(profile)
    overhead = profile.get("per_task_overhead_us")
    overhead = float(overhead) if isinstance(overhead, (int, float)) and overhead >= 0 else DEFAULT_OVERHEAD_US
    chunksize = getattr(opts, "chunksize", None) or profile.get("chunksize")
    if not isinstance(chunksize, int) or chunksize < 1:
        chunksize = None
    return PoolPlan(workers, method, chunksize, overhead)


# --------------------------------------------------------------------------------------------------- workers
_WORKER: dict = {}          # what a pool worker got from its runner (see _worker_init)


def _die_with_parent(runner_pid: int) -> None:
    """Linux: this worker gets SIGKILL when its runner dies (else an orphan worker would wait forever on the
    pool's queue, holding the node's CPU, memory and the log's file descriptors)."""
    if os.getppid() != runner_pid:                 # forkserver: the OS parent is the fork server
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != runner_pid:                 # the runner died just before prctl
        os._exit(1)


def _worker_init(job: Job, runner_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the runner handles Ctrl-C and stops its workers
    _die_with_parent(runner_pid)
    fw_faults.in_pool_worker(runner_pid)
    _WORKER["job"] = job
    job.workload.setup_worker(job.opts)


def _worker_chunk(tasks: list[Task]) -> tuple[list[Result], float]:
    t0 = time.perf_counter()
    results = list(run_tasks(_WORKER["job"], tasks))
    return results, time.perf_counter() - t0


def block_chunks(tasks: list[Task], key, chunksize: int) -> list[list[Task]]:
    """Chunks of at least ``chunksize`` tasks made of whole claim blocks (``fw_claims.block_of``), so that one
    worker holds each block's claim alone (a block cut in two would be shared by two workers of this runner)."""
    chunks: list[list[Task]] = []
    cur: list[Task] = []
    for _key, group in group_by_block(tasks, key):
        cur.extend(group)
        if len(cur) >= chunksize:
            chunks.append(cur)
            cur = []
    if cur:
        chunks.append(cur)
    return chunks


# --------------------------------------------------------------------------------------------------- runner
class PoolBroke(Exception):
    """A worker died: the items that were in flight (one of them probably killed it)."""

    def __init__(self, suspects: list[Task]):
        super().__init__(f"{len(suspects)} item(s) in flight")
        self.suspects = suspects


def kill_pool(pool) -> None:
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            proc.terminate()
        except Exception:  # noqa: BLE001
            pass
    pool.shutdown(wait=False, cancel_futures=True)


def run_pool(job: Job, tasks: list[Task], prog: Progress, plan: PoolPlan, info: dict) -> None:
    """Run ``tasks`` on a process pool (see the module docstring); ``info`` (the summary) gets the chunk size,
    the measured time per item and the number of worker crashes."""
    _PoolRun(job, prog, plan, info).run(tasks)


class _PoolRun:
    def __init__(self, job: Job, prog: Progress, plan: PoolPlan, info: dict):
        self.job, self.prog, self.plan, self.info = job, prog, plan, info
        self.ctx = multiprocessing.get_context(plan.method)
        self.finished: set[str] = set()

    def new_pool(self, n: int):
        return cf.ProcessPoolExecutor(n, mp_context=self.ctx, initializer=_worker_init,
                                      initargs=(self.job, os.getpid()))

    def take(self, results) -> None:
        for item, status, _reason in results:
            if item not in self.finished:
                if status != "busy":
                    self.finished.add(item)
                self.prog.add(status, item)

    def run(self, tasks: list[Task]) -> None:
        todo = list(tasks)
        chunksize = self.plan.chunksize
        crashes = 0
        while todo:
            try:
                chunksize = self.one_pass(todo, chunksize)
                break
            except PoolBroke as broke:
                check_stop()                   # workers killed by the stop signal: not their items' fault
                crashes += 1
                if not broke.suspects or crashes > 100:
                    raise DestinationError(f"worker processes keep dying ({crashes} times)") from None
                log(self.job.opts, f"{self.job.workload.name}: a worker died; re-running its "
                                   f"{len(broke.suspects)} in-flight item(s) one at a time")
                self.isolate(broke.suspects)
                todo = [t for t in todo if t.item not in self.finished]
                chunksize = chunksize or self.info.get("chunksize") or 1
        self.info["worker_crashes"] = crashes

    def one_pass(self, todo: list[Task], chunksize: int | None) -> int:
        """``todo`` on a new pool; returns the chunk size used; PoolBroke when a worker died."""
        pool = self.new_pool(self.plan.workers)
        inflight: dict = {}                    # future -> its chunk of tasks
        try:
            rest = todo
            if not chunksize:
                chunksize, rest = self.choose_chunksize(pool, todo, inflight)
            self.info["chunksize"] = chunksize
            log(self.job.opts, f"{self.job.workload.name}: {self.prog.total} items, {len(todo)} to do, "
                               f"workers={self.plan.workers} start_method={self.plan.method} chunksize={chunksize} "
                               f"per_task_overhead_us={self.plan.overhead} profile={self.info['profile']}")
            self.run_chunks(pool, block_chunks(rest, block_key(self.job), chunksize), inflight)
        except BrokenProcessPool:
            kill_pool(pool)
            raise PoolBroke([t for chunk in inflight.values() for t in chunk if t.item not in self.finished]) \
                from None
        except Stopped:
            self.let_inflight_finish(inflight)
            kill_pool(pool)
            raise
        except BaseException:
            kill_pool(pool)
            raise
        pool.shutdown(wait=True)
        return chunksize

    def choose_chunksize(self, pool, todo: list[Task], inflight: dict) -> tuple[int, list[Task]]:
        """(chunk size, the tasks not done yet): from the workload's hint, else by timing the first items one per
        task, each of another claim block (the first item of each worker also pays its imports: the fastest one
        counts).  The rest of a probed block waits for its probe: it finds the block's clean partial marker."""
        workers, overhead = self.plan.workers, self.plan.overhead
        hint = self.job.workload.item_seconds_hint
        if hint:
            return choose_chunksize(len(todo), workers, hint, overhead), todo
        probe = [members[0] for _key, members in group_by_block(todo, block_key(self.job))[:2 * workers]]
        futs = [pool.submit(_worker_chunk, [t]) for t in probe]
        inflight.update((f, [t]) for f, t in zip(futs, probe))
        self.prog.start_thread()
        times = []
        for fut in futs:
            while not cf.wait([fut], timeout=0.5).done:
                check_stop()
            results, secs = fut.result()
            del inflight[fut]
            times.append(secs)
            self.take(results)
        per_item = min(times)
        self.info["item_seconds"] = round(per_item, 6)
        probed = {t.item for t in probe}
        rest = [t for t in todo if t.item not in probed]
        return choose_chunksize(len(rest), workers, per_item, overhead), rest

    def run_chunks(self, pool, chunk_list: list[list[Task]], inflight: dict) -> None:
        """Keep a bounded number of chunks in flight until every one is done."""
        chunks = iter(chunk_list)
        for chunk in chunks:
            inflight[pool.submit(_worker_chunk, chunk)] = chunk
            if len(inflight) >= self.plan.workers * 3:
                break
        self.prog.start_thread()
        while inflight:
            check_stop()
            done, _ = cf.wait(list(inflight), timeout=0.5, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                results, _secs = fut.result()
                del inflight[fut]
                self.take(results)
                nxt = next(chunks, None)
                if nxt is not None:
                    inflight[pool.submit(_worker_chunk, nxt)] = nxt

    def let_inflight_finish(self, inflight: dict) -> None:
        """On a stop: the chunks in flight may finish (bounded), the rest is dropped."""
        for fut in inflight:
            fut.cancel()
        done, _ = cf.wait([f for f in inflight if not f.cancelled()], timeout=STOP_GRACE)
        for fut in done:
            try:
                self.take(fut.result()[0])
            except Exception:  # noqa: BLE001 - e.g. the workers got the signal too
                pass

    def isolate(self, suspects: list[Task]) -> None:
        """Each suspect alone in a one-worker pool: the one whose worker dies again is ``worker-crashed``."""
        pool = None
        try:
            for task in suspects:
                check_stop()
                if task.item in self.finished:
                    continue
                pool = pool or self.new_pool(1)
                try:
                    self.take(pool.submit(_worker_chunk, [task._replace(recheck=True)]).result()[0])
                except BrokenProcessPool:
                    kill_pool(pool)
                    pool = None
                    record_failure(self.job.dst, task.item, "worker-crashed", "the worker process died while "
                                   "processing this item (a crash in a decoder, or killed, e.g. out of memory)",
                                   self.job.node)
                    self.take([Result(task.item, "failed", "worker-crashed")])
        except BaseException:
            if pool:
                kill_pool(pool)
            raise
        if pool:
            pool.shutdown(wait=True)
