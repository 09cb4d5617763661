"""Chunk sizes: what one pool task costs, and how big a chunk must be before that cost disappears.

Question: mapping a tiny function (``x * x``) over 100,000 items, how much faster is handing each worker a
chunk than handing it one item at a time?  Each item sent alone pays for pickling, a pipe write, a queue hop
and a result on the way back; a chunk pays that once.

How to read it: compare the ``chunks: process pool`` rows with each other.  ``chunksize=1`` against ``manual``
(the list cut into one chunk per worker) is the per-task overhead; the machine profile stores it as
``per_task_overhead_us``.  Throughput should flatten somewhere between 1,000 and 10,000 items per chunk: past
that, bigger chunks only hurt load balancing.  ``ThreadPoolExecutor.map`` ignores ``chunksize``, so the thread
rows chunk by hand; threads cannot run ``x * x`` in parallel (GIL), they only show the cost of a future.
"""
from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from itertools import chain

import pytest

CHUNKSIZES = [1, 10, 100, 1_000, 10_000]


def square(x):
    return x * x


def squares(chunk):
    return [x * x for x in chunk]  # every result travels back, as with pool.map(square, ...)


def cut(seq, size):
    """``seq`` in consecutive slices of ``size`` items."""
    return [seq[i:i + size] for i in range(0, len(seq), size)]


@pytest.fixture(scope="module")
def items(sized):
    return list(range(sized(small=5_000, default=100_000, large=1_000_000)))


def expected(items):
    n = len(items)
    return (n - 1) * n * (2 * n - 1) // 6


def _warm(pool, n):
    # Make every worker exist before the clock starts (some start methods spawn workers on demand).
    list(pool.map(time.sleep, [0.02] * n))


def _rounds(chunk, sized):
    # chunksize 1 at default scale takes ~10 s a round on 2 cores: once is enough to see a 100x gap.
    return 1 if chunk == 1 else sized(small=3, default=3, large=2)


@pytest.mark.parametrize("chunk", CHUNKSIZES + ["manual"])
def test_process_pool_chunks(benchmark, pools, items, sized, n_workers, chunk):
    """Process pool, x*x per item: items/s at each chunk size; chunksize=1 vs manual = per-task overhead."""
    size = -(-len(items) // n_workers) if chunk == "manual" else chunk
    benchmark.group = "chunks: process pool"
    benchmark.extra_info.update(kind="process", items=len(items), workers=n_workers, chunksize=size,
                                manual=chunk == "manual")

    if chunk == "manual":
        def run(pool):
            return sum(chain.from_iterable(pool.map(squares, cut(items, size))))
    else:
        def run(pool):
            return sum(pool.map(square, items, chunksize=size))

    total = benchmark.pedantic(
        run, setup=pools.setup(lambda: ProcessPoolExecutor(n_workers), lambda p: _warm(p, n_workers)),
        teardown=pools.teardown, rounds=_rounds(chunk, sized))
    assert total == expected(items)


@pytest.mark.parametrize("chunk", CHUNKSIZES + ["manual"])
def test_thread_pool_chunks(benchmark, pools, items, sized, n_workers, chunk):
    """Thread pool, same map chunked by hand: the cost of one future per item, without parallel speed-up."""
    size = -(-len(items) // n_workers) if chunk == "manual" else chunk
    benchmark.group = "chunks: thread pool"
    benchmark.extra_info.update(kind="thread", items=len(items), workers=n_workers, chunksize=size,
                                manual=chunk == "manual")

    if size == 1:
        def run(pool):
            return sum(pool.map(square, items))
    else:  # ThreadPoolExecutor.map ignores chunksize: cut by hand
        def run(pool):
            return sum(chain.from_iterable(pool.map(squares, cut(items, size))))

    total = benchmark.pedantic(run, setup=pools.setup(lambda: ThreadPoolExecutor(n_workers)),
                               teardown=pools.teardown, rounds=sized(small=3, default=3, large=2))
    assert total == expected(items)
