"""Serialization: which file format to keep intermediate tables in.

Question: a DataFrame of ~1M mixed-type rows (int64, int32, float, bool, strings, a categorical, timestamps;
~20k rows at small scale) written and read back as CSV, pickle, parquet and feather: how long does each take,
how big is the file, and do the dtypes survive the round trip?

How to read it: compare rows within ``serialization: write`` and within ``serialization: read``; the
``extra_info`` of each row holds ``size_bytes``, ``dtypes_survive`` and ``changed`` (column: before -> after).
CSV is slow both ways and loses the categorical, the timestamps and the narrow ints; pickle is fast but
Python-only and unsafe to load from strangers; parquet and feather keep dtypes and are readable elsewhere.
The profile's ``serialization_ranking`` orders formats by write + read time.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest

FORMATS = {
    "csv": (lambda df, p: df.to_csv(p, index=False), pd.read_csv),
    "pickle": (lambda df, p: df.to_pickle(p), pd.read_pickle),
    "parquet": (lambda df, p: df.to_parquet(p, index=False), pd.read_parquet),
    "feather": (lambda df, p: df.to_feather(p), pd.read_feather),
}


def make_frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "id": np.arange(n, dtype=np.int64),
        "count": rng.integers(0, 1_000, n).astype(np.int32),
        "value": rng.normal(size=n),
        "ok": rng.random(n) < 0.5,
        "name": [f"item-{i % 50_000:05d}" for i in range(n)],
        "kind": pd.Categorical(rng.choice(["image", "table", "text", "audio"], n)),
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365 * 86_400, n), unit="s"),
    })


def dtype_changes(before: pd.DataFrame, after: pd.DataFrame) -> dict:
    return {c: f"{before[c].dtype} -> {after[c].dtype if c in after else 'missing'}"
            for c in before.columns if c not in after or str(before[c].dtype) != str(after[c].dtype)}


@pytest.fixture(scope="module")
def frame(sized):
    return make_frame(sized(small=20_000, default=1_000_000, large=1_000_000))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("serialization")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _rounds(fmt, sized):
    return sized(small=3, default=2 if fmt == "csv" else 3, large=2)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_write(benchmark, frame, workdir, sized, fmt):
    """Write the frame in one format; extra_info: file size and whether dtypes survive a read-back."""
    write, read = FORMATS[fmt]
    path = workdir / f"write.{fmt}"
    benchmark.group = "serialization: write"

    def setup():
        path.unlink(missing_ok=True)
        return (frame, path), {}

    benchmark.pedantic(write, setup=setup, rounds=_rounds(fmt, sized))
    changed = dtype_changes(frame, read(path))
    benchmark.extra_info.update(format=fmt, rows=len(frame), size_bytes=os.path.getsize(path),
                                dtypes_survive=not changed, changed=changed)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_read(benchmark, frame, workdir, sized, fmt):
    """Read the frame back from one format; extra_info: file size and the dtypes that changed."""
    write, read = FORMATS[fmt]
    path = workdir / f"read.{fmt}"
    write(frame, path)
    benchmark.group = "serialization: read"
    got = benchmark.pedantic(read, args=(path,), rounds=_rounds(fmt, sized))
    changed = dtype_changes(frame, got)
    benchmark.extra_info.update(format=fmt, rows=len(frame), size_bytes=os.path.getsize(path),
                                dtypes_survive=not changed, changed=changed)
    assert len(got) == len(frame)
