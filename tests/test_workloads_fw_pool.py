"""workloads/fw_pool.py: how a run uses this machine (plan_pool): options, then a fitting profile, then defaults."""
from __future__ import annotations

import argparse
import multiprocessing

from tests.support.workloads import fleetwork

import fw_pool  # noqa: E402 - workloads/ is on sys.path (workloads_support)


def opts(**kw):
    return argparse.Namespace(**{"workers": None, "start_method": None, "chunksize": None, **kw})


def test_options_beat_the_profile_and_the_profile_beats_the_defaults(monkeypatch):
    monkeypatch.setenv("FLEETBOOK_CORES", "4")
    profile = {"cores": 4, "workers": 3, "start_method": "spawn", "chunksize": 7, "per_task_overhead_us": 50}
    plan = fw_pool.plan_pool(opts(), profile, 100)
    assert plan == fw_pool.PoolPlan(3, "spawn", 7, 50.0)
    plan = fw_pool.plan_pool(opts(workers=2, start_method="fork", chunksize=5), profile, 100)
    assert plan == fw_pool.PoolPlan(2, "fork", 5, 50.0)
    plan = fw_pool.plan_pool(opts(), {}, 100)
    assert (plan.workers, plan.chunksize, plan.overhead) == (4, None, fleetwork.DEFAULT_OVERHEAD_US)


def test_never_more_workers_than_tasks_and_none_bad_from_the_profile(monkeypatch):
    monkeypatch.setenv("FLEETBOOK_CORES", "8")
    assert fw_pool.plan_pool(opts(), {}, 3).workers == 3
    assert fw_pool.plan_pool(opts(), {}, 0).workers == 1
    plan = fw_pool.plan_pool(opts(), {"chunksize": 0, "per_task_overhead_us": -1}, 50)
    assert (plan.chunksize, plan.overhead) == (None, fleetwork.DEFAULT_OVERHEAD_US)


def _plan_in_daemon(queue):
    queue.put(fw_pool.plan_pool(opts(workers=4), {}, 100).workers)


def test_inside_a_daemon_process_the_items_run_inline():
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_plan_in_daemon, args=(queue,), daemon=True)
    proc.start()
    assert queue.get(timeout=30) == 1
    proc.join(30)


def test_pool_chunks_are_whole_claim_blocks(monkeypatch):
    """Issue 15: a chunk never cuts a claim block in two (one worker holds each block's claim alone)."""
    import fw_claims
    from fw_items import Task
    from fw_pool import block_chunks

    monkeypatch.setenv("FLEETBOOK_CLAIM_BLOCK", "8")
    tasks = [Task(f"x{k:03d}") for k in range(100)]
    key = lambda t: fw_claims.block_of(t.item, 1, len(tasks))  # noqa: E731
    chunks = block_chunks(tasks, key, 5)
    assert sorted(t.item for c in chunks for t in c) == [t.item for t in tasks]
    owner = {}
    for i, c in enumerate(chunks):
        assert len(c) >= 5 or i == len(chunks) - 1
        for t in c:
            assert owner.setdefault(key(t), i) == i                 # every block in one chunk
    assert len(chunks) > 4
