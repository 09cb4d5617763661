"""Start methods: what it costs to get a process pool going, and to get data into it.

Questions:

* How long from "make a pool" to "first result" with ``fork``, ``spawn`` and ``forkserver``, with a small
  parent and with a parent holding a big numpy array or a big ``bytes`` (~1 GB; ~50 MB at small scale)?
  ``fork`` copies page tables only, so it stays in milliseconds; ``spawn`` starts a fresh interpreter that
  re-imports this module (and numpy); ``forkserver`` starts a server once per parent process (its cost is
  counted here: the server is stopped before every round) and forks workers from it.
* How long does it take to hand a worker a 10 MB / 100 MB argument (pickled through a pipe), against a forked
  worker reading the same data it inherited at fork time (nothing sent)?

How to read it: in ``start methods: pool start`` compare the three methods within one parent size; the
fastest with the small parent is the profile's ``start_method``.  In ``start methods: send vs inherit`` the
ratio ``send / inherit`` is what you save by loading big read-only data before the pool forks.
"""
from __future__ import annotations

import gc
import multiprocessing as mp
import os

import numpy as np
import pytest

METHODS = ["fork", "spawn", "forkserver"]

# Module globals so that forked workers inherit them.
_BALLAST = None
_INHERITED = None


def first_result():
    return os.getpid()


def payload_size(payload):
    return len(payload)


def inherited_size():
    return len(_INHERITED)


def _stop_forkserver():
    # Count the forkserver's own start-up in every round, as a fresh workload process would pay it.
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)
    if stop is not None:
        stop()


@pytest.fixture(scope="module", params=["small", "numpy", "bytes"])
def parent(request, sized):
    """The parent's extra memory: nothing, a numpy array, or a bytes object (pages touched)."""
    global _BALLAST
    size = sized(small=50 * 2**20, default=2**30, large=2**30)
    if request.param == "numpy":
        _BALLAST = np.ones(size, dtype=np.uint8)
    elif request.param == "bytes":
        _BALLAST = b"\1" * size
    yield request.param, (0 if request.param == "small" else size)
    _BALLAST = None
    gc.collect()


@pytest.mark.parametrize("method", METHODS)
def test_pool_start(benchmark, pools, parent, n_workers, sized, method):
    """Pool start-up + first result per start method and parent size; lowest with a small parent wins."""
    kind, ballast = parent
    benchmark.group = "start methods: pool start"
    benchmark.extra_info.update(method=method, parent=kind, parent_bytes=ballast, workers=n_workers)
    ctx = mp.get_context(method)

    def setup():
        if method == "forkserver":
            _stop_forkserver()
        return (), {}

    def start():
        pool = ctx.Pool(n_workers)
        pools.live.append(pool)
        return pool.apply(first_result)

    def teardown():
        pools.close()

    # One warm-up round: the first spawn of a session also reads numpy & co. from disk.
    pid = benchmark.pedantic(start, setup=setup, teardown=teardown, rounds=sized(small=2, default=5, large=7),
                             warmup_rounds=1)
    assert pid != os.getpid()


@pytest.mark.parametrize("how", ["send", "inherit"])
@pytest.mark.parametrize("mb", [10, 100])
def test_send_or_inherit(benchmark, pools, sized, how, mb):
    """One call whose argument is N MB: pickled through the pipe (send) vs read from fork-inherited memory."""
    global _INHERITED
    size = sized(small=mb // 10, default=mb) * 2**20
    benchmark.group = "start methods: send vs inherit"
    benchmark.extra_info.update(how=how, megabytes=size // 2**20, method="fork")
    data = b"\1" * size
    ctx = mp.get_context("fork")

    def make():
        global _INHERITED
        _INHERITED = data if how == "inherit" else None
        return ctx.Pool(1)

    def warm(pool):
        pool.apply(first_result)

    if how == "send":
        def run(pool):
            return pool.apply(payload_size, (data,))
    else:
        def run(pool):
            return pool.apply(inherited_size)

    try:
        got = benchmark.pedantic(run, setup=pools.setup(make, warm), teardown=pools.teardown,
                                 rounds=sized(small=2, default=5, large=7))
    finally:
        _INHERITED = None
    assert got == size
