"""Threads vs processes for an I/O-bound item: how many threads it takes to beat one process per core.

Question: items that mostly wait (here a 10 ms ``time.sleep``, standing in for a network or disk round trip;
5 ms at small scale) run through a ThreadPoolExecutor of 2 / 8 / 64 / 128 threads and a ProcessPoolExecutor
with one process per core.  Waiting releases the GIL, so threads overlap waits that a handful of processes
cannot; processes also pay a pickle and a pipe hop per item.

How to read it: ``processes / threads-N`` is the speed-up of N threads.  The profile's
``thread_process_crossover`` is the smallest measured thread count whose median beats the process pool
(with pure waits that is usually the first one), with the speed-ups at every count; past some count the
curve flattens because the wait, not the pool, bounds the run (``items * wait / threads``).

Second question (``threads: CPU share``): real items are rarely pure waits.  Each item here is 10 ms (5 ms
small) of which a share is Python work that holds the GIL (0, 25, 50, 75, 100 %) and the rest a wait.  Eight
threads against one process per core: the profile's ``thread_process_crossover.cpu_share`` is the smallest
measured share at which the process pool wins (expect about ``1 / cores``).  Below it, prefer threads.
"""
from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

THREADS = [2, 8, 64, 128]


def wait_item(seconds):
    time.sleep(seconds)
    return seconds


def _warm(pool, n):
    list(pool.map(time.sleep, [0.02] * n))


@pytest.mark.parametrize("kind,workers", [("threads", n) for n in THREADS] + [("processes", "cores")])
def test_io_bound(benchmark, pools, sized, n_workers, kind, workers):
    """Pure waits: N threads vs one process per core; the first thread count that wins is the crossover."""
    workers = n_workers if workers == "cores" else workers
    items = sized(small=64, default=512, large=1_000)
    wait = sized(small=0.005, default=0.01, large=0.01)
    benchmark.group = "threads: I/O-bound items"
    benchmark.extra_info.update(kind=kind, workers=workers, items=items, wait_s=wait)
    make = (lambda: ThreadPoolExecutor(workers)) if kind == "threads" else (lambda: ProcessPoolExecutor(workers))

    def run(pool):
        return sum(pool.map(wait_item, [wait] * items))

    total = benchmark.pedantic(run, setup=pools.setup(make, lambda p: _warm(p, workers)),
                               teardown=pools.teardown, rounds=sized(small=2, default=2, large=3))
    assert total == pytest.approx(items * wait)


SHARES = [0, 25, 50, 75, 100]


def mixed_item(spin, wait):
    sum(range(spin))  # holds the GIL throughout
    time.sleep(wait)
    return wait


@pytest.fixture(scope="module")
def spin_per_ms():
    """How many ``sum(range(n))`` steps take 1 ms of CPU (thread time: other load on the machine does not count)."""
    n = 500_000
    best = min(_cpu_timed(n) for _ in range(5))
    return max(1, int(n / (best * 1000)))


def _cpu_timed(n):
    t = time.thread_time()
    sum(range(n))
    return max(time.thread_time() - t, 1e-6)


@pytest.mark.parametrize("kind", ["threads", "processes"])
@pytest.mark.parametrize("share", SHARES)
def test_cpu_share(benchmark, pools, sized, n_workers, spin_per_ms, share, kind):
    """Items part GIL-bound work, part wait: 8 threads vs one process per core at each work share."""
    items = sized(small=32, default=160, large=400)
    item_ms = sized(small=5, default=10, large=10)
    workers = 8 if kind == "threads" else n_workers
    spin = int(spin_per_ms * item_ms * share / 100)
    wait = item_ms * (100 - share) / 100 / 1000
    benchmark.group = "threads: CPU share"
    benchmark.extra_info.update(kind=kind, workers=workers, items=items, item_ms=item_ms, cpu_share=share,
                                spin_per_ms=spin_per_ms)
    make = (lambda: ThreadPoolExecutor(workers)) if kind == "threads" else (lambda: ProcessPoolExecutor(workers))

    def run(pool):
        return sum(pool.map(mixed_item, [spin] * items, [wait] * items))

    total = benchmark.pedantic(run, setup=pools.setup(make, lambda p: _warm(p, workers)),
                               teardown=pools.teardown, rounds=sized(small=2, default=2, large=3))
    assert total == pytest.approx(items * wait)
