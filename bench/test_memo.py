"""Memoization: what remembering earlier answers buys when inputs repeat.

Question: raising each item to the 10th power by repeated multiplication (``reduce(mul, [x] * 10)``, a stand-in
for any pure per-item function that costs about a microsecond) over a long list drawn from 64 distinct values,
how much faster is it with a dict memo, with ``functools.lru_cache``, and with a numpy lookup table (the floor:
no Python per item at all)?

How to read it: ``no memo / dict memo`` and ``no memo / lru_cache`` are the memo speed-ups (the original
write-up saw about 2.7x for its function; a costlier function gains more).  ``lru_cache / numpy lookup`` is
what is still left on the table once per-item Python work is the cost.
"""
from __future__ import annotations

import functools
import operator

import numpy as np
import pytest

DISTINCT = 64  # 63**10 still fits an int64, so the numpy table holds exact answers


def power10(x):
    return functools.reduce(operator.mul, [x] * 10, 1)


def no_memo(values):
    return [power10(v) for v in values]


def dict_memo(values):
    memo = {}
    out = []
    for v in values:
        r = memo.get(v)
        if r is None:
            r = memo[v] = power10(v)
        out.append(r)
    return out


def lru_memo(values, cached):
    return [cached(v) for v in values]


@pytest.fixture(scope="module")
def values(sized):
    n = sized(small=50_000, default=1_000_000, large=10_000_000)
    return np.random.default_rng(0).integers(0, DISTINCT, n)


@pytest.fixture(scope="module")
def answer(values):
    table = np.array([power10(v) for v in range(DISTINCT)], dtype=np.int64)
    return table[values]


@pytest.mark.parametrize("how", ["none", "dict", "lru_cache", "numpy"])
def test_memo(benchmark, values, answer, sized, how):
    """Same answers four ways; no memo / each other row = that memo's speed-up, numpy = the floor."""
    benchmark.group = "memo: reduce to the 10th power"
    benchmark.extra_info.update(how=how, items=len(values), distinct=DISTINCT)
    as_list = values.tolist()

    if how == "none":
        def setup():
            return (as_list,), {}
        run = no_memo
    elif how == "dict":
        def setup():
            return (as_list,), {}
        run = dict_memo
    elif how == "lru_cache":
        def setup():  # a cold cache every round
            return (as_list, functools.lru_cache(maxsize=None)(power10)), {}
        run = lru_memo
    else:
        table = np.array([power10(v) for v in range(DISTINCT)], dtype=np.int64)

        def setup():
            return (table, values), {}

        def run(table, values):
            return table[values]

    got = benchmark.pedantic(run, setup=setup, rounds=sized(small=3, default=3, large=2))
    assert np.array_equal(np.asarray(got, dtype=np.int64), answer)
