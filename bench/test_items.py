"""Per-item cost of each workload on this machine, on a sample of the job's real inputs.

Questions:

* ``items: per-item time``: how long does one item of resize, edges, features and gridsearch take here, in one
  process (the work only: the sample is copied to a local folder first, so the shared disk's own cost is not
  in it)?  This is what ``invoke plan`` multiplies by the number of items: the profile's ``item_seconds``.
  resize and features take the sampled images, edges the resize outputs of the sample (its input in the
  pipeline), gridsearch grid points (no input).
* ``items: run start``: what does one workload run cost before its first item (interpreter, imports, listing
  the source, scanning the destination, exit)?  ``python workloads/<w>.py`` on an empty folder.
* ``items: parallel``: how far does one process per core scale here?  Every worker resizes the whole sample;
  ``efficiency`` = one worker alone / all workers at once (1.0: every core as fast as one alone; a 2-vCPU
  cloud machine is often one physical core with two hyper-threads, well below 1); ``machine_efficiency`` the
  same with one worker per CPU of the machine (differs on a local fleet node, which counts fewer cores).

The sample: ``--bench-src DIR`` (``invoke bench --node`` passes the node's mount of the job's source folder),
``--bench-sample N`` images of it, spread over the folder by the hash of their names (the same sample every
run); only the first ``50 * N`` images found are considered, so that a huge source over sshfs is not walked
to its end.  Without ``--bench-src``, generated 1024x768 photos.

How to read it: per-item seconds = median / ``extra_info.items``; ``extra_info`` also has the mean input and
output bytes per item, which ``invoke plan`` uses for the shared disk's link.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from bench_support import make_photos

import fleetwork  # workloads/ is on sys.path (bench/conftest.py)

GROUP = "items: per-item time"


def _first_images(src: Path, extensions, limit: int) -> list[str]:
    """Up to ``limit`` image paths below ``src`` (relative, sorted walk), stopping early."""
    found = []
    for folder, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(extensions) and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(folder, name), src))
                if len(found) >= limit:
                    return found
    return found


@pytest.fixture(scope="module")
def sample(tmp_path_factory, bench_src, sample_size):
    """{"dir": local copy of the sample, "items": [...], "source": ..., "read_s_per_item": ...}."""
    base = tmp_path_factory.mktemp("items")
    local = base / "sample"
    if bench_src is None:
        items = make_photos(local, sample_size)
        return {"dir": local, "base": base, "items": items, "source": "generated photos", "read_s_per_item": None}
    exts = tuple(fleetwork.load("resize").extensions)
    candidates = _first_images(bench_src, exts, 50 * sample_size)
    items = sorted(candidates, key=fleetwork.item_hash)[:sample_size]
    t0 = time.perf_counter()
    for item in items:
        (local / item).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bench_src / item, local / item)
    read = (time.perf_counter() - t0) / len(items) if items else None
    return {"dir": local, "base": base, "items": items, "source": str(bench_src), "read_s_per_item": read}


@pytest.fixture(scope="module")
def resized(sample):
    """The resize outputs of the sample (128 px), the input of edges; made once, untimed."""
    wl = fleetwork.load("resize")
    dst = sample["base"] / "resized"
    opts = wl.parse_args(["--src", str(sample["dir"]), "--dst", str(dst), "--quiet"])
    for item in sample["items"]:
        wl.process(item, str(sample["dir"]), str(dst), opts)
    return dst, [wl.output_for(item, opts) for item in sample["items"]]


def _bytes(folder: Path, names) -> float | None:
    sizes = [os.path.getsize(folder / n) for n in names if (folder / n).is_file()]
    return round(sum(sizes) / len(sizes), 1) if sizes else None


def _per_item(benchmark, sample, name: str, src: Path | None, items: list[str], argv: list[str], what: str,
              rounds: int, span_s: float):
    """Time ``workload.process`` over ``items`` in this process (after one untimed pass that warms imports and
    caches and gives the output sizes), each round going over the sample as many times as it takes to last
    ``span_s`` (a short burst of other work then decides little); record what the profile needs."""
    wl = fleetwork.load(name)
    if not items:
        pytest.skip(f"no input for {name} in the sample ({sample['source']})")
    opts = wl.parse_args(["--src", str(src or sample["dir"]), "--dst", "unused", *argv, "--quiet"])
    wl.setup_worker(opts)
    warm = Path(tempfile.mkdtemp(prefix=f"warm-{name}-", dir=sample["base"]))
    t0 = time.perf_counter()
    for item in items:
        wl.process(item, str(src) if src else None, str(warm), opts)
    passes = max(1, math.ceil(span_s / max(time.perf_counter() - t0, 1e-6)))
    benchmark.group = GROUP
    benchmark.extra_info.update(
        workload=name, items=len(items) * passes, sample_items=len(items), passes=passes, input=what,
        sample=sample["source"], in_bytes=_bytes(src, items) if src else None,
        out_bytes=_bytes(warm, [wl.output_for(i, opts) for i in items]),
        read_s_per_item=sample["read_s_per_item"])

    def once(dst):
        for _ in range(passes):
            for item in items:
                wl.process(item, str(src) if src else None, dst, opts)

    benchmark.pedantic(once, setup=lambda: ((tempfile.mkdtemp(prefix=f"{name}-", dir=sample["base"]),), {}),
                       rounds=rounds, iterations=1)


@pytest.fixture(scope="module")
def timing(sized) -> dict:
    """Rounds per workload and how long each round lasts at least."""
    return {"rounds": sized(small=2, default=5), "span_s": sized(small=0.05, default=0.3, large=1.0)}


def test_resize_per_item(benchmark, sample, timing):
    _per_item(benchmark, sample, "resize", sample["dir"], sample["items"], [], "the sample", **timing)


def test_edges_per_item(benchmark, sample, resized, timing):
    dst, outputs = resized
    _per_item(benchmark, sample, "edges", dst, outputs, [], "resize outputs of the sample (128 px)", **timing)


def test_features_per_item(benchmark, sample, timing):
    _per_item(benchmark, sample, "features", sample["dir"], sample["items"], [], "the sample", **timing)


def test_gridsearch_per_item(benchmark, sample, sized, timing):
    wl = fleetwork.load("gridsearch")
    points = wl.list_items(None, wl.parse_args(["--dst", "unused"]))[:sized(small=1, default=2, large=4)]
    _per_item(benchmark, sample, "gridsearch", None, points, ["--grid", "small"], "grid points (--grid small)",
              rounds=sized(small=1, default=3), span_s=timing["span_s"])


@pytest.mark.parametrize("name", ["resize", "edges", "features", "gridsearch"])
def test_run_start(benchmark, sample, sized, name):
    """Wall time of one run that has nothing to do: start, imports, listing, one scan, the summary, exit."""
    script = str(Path(fleetwork.__file__).with_name(f"{name}.py"))
    empty = Path(tempfile.mkdtemp(prefix="empty-", dir=sample["base"]))
    dst = Path(tempfile.mkdtemp(prefix="start-", dir=sample["base"]))
    argv = [sys.executable, script, "--dst", str(dst), "--quiet", "--workers", "1"]
    argv += ["--grid", "small"] if name == "gridsearch" else ["--src", str(empty)]
    if name == "gridsearch":   # every point already done: the run lists, skips them all and ends
        wl = fleetwork.load(name)
        for point in wl.list_items(None, wl.parse_args(["--dst", str(dst), "--grid", "small"])):
            (dst / f"{point}.json").write_text("{}\n")
    benchmark.group = "items: run start"
    benchmark.extra_info.update(workload=name)

    def start():
        subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "FLEETBOOK_PROFILE": os.devnull})

    benchmark.pedantic(start, rounds=sized(small=2, default=3), warmup_rounds=1, iterations=1)


def _resize_all(src: str, items: list[str], dst: str, passes: int = 1) -> float:
    wl = fleetwork.load("resize")
    opts = wl.parse_args(["--src", src, "--dst", dst, "--quiet"])
    t0 = time.perf_counter()
    for _ in range(passes):
        for item in items:
            wl.process(item, src, dst, opts)
    return time.perf_counter() - t0


def test_parallel_efficiency(benchmark, sample, sized):
    """One worker alone, then one per core at once, each resizing the whole sample (interleaved rounds, each
    long enough, ``span_s``, that a scheduler hiccup does not decide it).  Where the machine has more CPUs than
    this node counts as its cores (a local fleet node), also all its CPUs at once: ``machine_efficiency``, how
    far the machine its nodes share scales."""
    n, cpus = fleetwork.machine_cores(), os.cpu_count() or 1   # machine_cores: what conftest records as cores
    if not sample["items"]:
        pytest.skip(f"no images in the sample ({sample['source']})")
    src, items = str(sample["dir"]), sample["items"]
    span = sized(small=0.1, default=0.4, large=1.0)

    def dst():
        return tempfile.mkdtemp(prefix="par-", dir=sample["base"])

    size = max(n, cpus)
    with ProcessPoolExecutor(size, mp_context=multiprocessing.get_context("fork")) as pool:
        one = max(pool.map(_resize_all, [src] * size, [items] * size, [dst() for _ in range(size)]))  # warm all
        passes = max(1, math.ceil(span / max(one, 1e-6)))

        def together(k=n):
            return max(pool.map(_resize_all, [src] * k, [items] * k, [dst() for _ in range(k)], [passes] * k))

        alone, both, machine = [], [], []
        for _ in range(sized(small=2, default=5)):
            alone.append(pool.submit(_resize_all, src, items, dst(), passes).result())
            for k, times in ((n, both), (cpus, machine)) if cpus != n else ((n, both),):
                t0 = time.perf_counter()
                together(k)
                times.append(time.perf_counter() - t0)
        # one worker is its own baseline: 1.0 by definition (measuring it would only measure the noise)
        efficiency = 1.0 if n == 1 else statistics.median(alone) / statistics.median(both)
        machine_eff = statistics.median(alone) / statistics.median(machine or both)
        benchmark.group = "items: parallel"
        benchmark.extra_info.update(workers=n, items=len(items), passes=passes, cpus=cpus,
                                    alone_s=round(statistics.median(alone), 4),
                                    together_s=round(statistics.median(both), 4),
                                    efficiency=round(min(1.0, efficiency), 3),
                                    machine_efficiency=round(min(1.0, machine_eff), 3))
        benchmark.pedantic(together, rounds=1, iterations=1)
    print(f"\nparallel efficiency of {n} workers: {efficiency:.2f}; of {cpus}: {machine_eff:.2f}")
