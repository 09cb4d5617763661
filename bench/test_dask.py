"""Dask granularity: one task per file against one task per chunk of files, on a LocalCluster.

Question: on Dask, what does handing the cluster one task per file cost against a few chunks per worker?
Every Dask task is a scheduler round trip (key, state machine, worker message, result message), so with small
files the per-task cost dwarfs the work.  The fleet's Dask engine therefore submits chunks
(``playbooks/engines/dask.py``); ``test_per_task_overhead`` measures Dask's own per-task cost, which the engine
also measures on the real cluster (no-op tasks) before it picks a chunk size.

The cluster is a LocalCluster with 2 workers of 1 thread each, in-process (``processes=False``: no process
start in the timings, and nothing to pickle by reference from this test module); it is started once per module
and closed properly (no warnings at shutdown).  How to read it: compare ``dask: per-file vs chunked`` rows;
``test_chunked_beats_per_file`` prints and records the ratio.
"""
from __future__ import annotations

import hashlib
import time

import pytest

WORKERS = 2


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()[:8]


def digest_chunk(paths: list[str]) -> list[str]:
    return [digest(p) for p in paths]


def noop(x):
    return x


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture(scope="module")
def files(tmp_path_factory, sized):
    folder = tmp_path_factory.mktemp("dask-files")
    paths = []
    for i in range(sized(small=600, default=6_000, large=30_000)):
        p = folder / f"{i // 1000:03d}" / f"f{i:06d}.bin"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(i.to_bytes(4, "little") * 256)  # 1 KB
        paths.append(str(p))
    return paths


def per_file(client, paths):
    futures = client.map(digest, paths, pure=False)
    return sum(len(f.result()) for f in _as_completed(client, futures))


def chunked(client, paths, chunks_per_worker=4):
    n = WORKERS * chunks_per_worker
    size = -(-len(paths) // n)
    futures = client.map(digest_chunk, [paths[k:k + size] for k in range(0, len(paths), size)], pure=False)
    return sum(len(x) for f in _as_completed(client, futures) for x in f.result())


def _as_completed(client, futures):
    from distributed import as_completed
    return as_completed(futures, loop=client.loop)


@pytest.mark.parametrize("how", ["per-file", "chunked"])
def test_per_file_vs_chunked(benchmark, client, files, how):
    """Digest every file: one Dask task per file, or 4 chunks per worker."""
    benchmark.group = "dask: per-file vs chunked"
    benchmark.extra_info.update(files=len(files), workers=WORKERS, how=how,
                                tasks=len(files) if how == "per-file" else 4 * WORKERS)
    fn = per_file if how == "per-file" else chunked
    total = benchmark.pedantic(fn, args=(client, files), rounds=1 if how == "per-file" else 3, warmup_rounds=0)
    assert total == 8 * len(files)


def test_chunked_beats_per_file(client, files, record_property, capsys):
    """Both ways timed back to back (median of 3): the ratio the report quotes; chunked must win clearly."""
    def median(fn):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn(client, files)
            times.append(time.perf_counter() - t0)
        return sorted(times)[1]

    chunked(client, files)  # warm the workers' code paths
    t_file, t_chunk = median(per_file), median(chunked)
    ratio = t_file / t_chunk
    record_property("dask_per_file_vs_chunked", round(ratio, 1))
    with capsys.disabled():
        print(f"\ndask: {len(files)} files, per-file {t_file:.3f} s ({t_file / len(files) * 1e6:.0f} us/file), "
              f"chunked {t_chunk:.3f} s: per-file / chunked = {ratio:.1f}x")
    assert ratio > 2, f"chunking should clearly beat one task per file (got {ratio:.1f}x)"


def test_per_task_overhead(client, sized, record_property, capsys):
    """Dask's own cost per task (no-op tasks, wall time / tasks): what the engine's plan uses."""
    n = sized(small=400, default=4_000, large=20_000)
    client.gather(client.map(noop, range(50), pure=False))
    t0 = time.perf_counter()
    client.gather(client.map(noop, range(n), pure=False))
    us = (time.perf_counter() - t0) / n * 1e6
    record_property("dask_per_task_overhead_us", round(us, 1))
    with capsys.disabled():
        print(f"\ndask: per-task overhead {us:.0f} us (no-op tasks, {n} of them, {WORKERS} workers)")
    assert us > 0
