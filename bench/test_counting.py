"""Skip-if-done and counting: how a workload finds the work left, and how ``invoke progress`` counts outputs.

Questions, over N finished outputs (200,000 at default scale, 2,000 at small), laid out flat in one folder
and spread over 256 hash-prefix folders (``ab/item-0000123.out``):

* skip-if-done: is asking ``os.path.exists()`` once per item slower than one directory scan into a set and
  set look-ups?  (``counting: skip-if-done``)
* counting: how does a Python scan (``workloads/fleetwork.py:scan_outputs`` when present, else an os.scandir
  walk; ``extra_info.counter`` says which), or plain ``sum(len(os.listdir(d)))``, compare with
  ``find DIR -type f | wc -l``, the shell one-liner that ``invoke progress`` would otherwise run?
  (``counting: count outputs``; the profile's ``counting.progress_find_vs_scan`` is find / scan_outputs)

How to read it: ratios within each group.  The head counts on its own disk; over an sshfs mount every
directory listing is a network round trip (that comparison needs a local fleet and lives with the fleet
benchmarks).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def prefix(name: str) -> str:
    return hashlib.blake2b(name.encode(), digest_size=1).hexdigest()


def _touch(path: str) -> None:
    try:
        os.mknod(path, 0o644)  # an empty regular file, about twice as fast as open + close
    except (AttributeError, PermissionError):  # pragma: no cover - platforms without mknod for files
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def walk_count(root) -> int:
    """Files under ``root``, by an explicit os.scandir walk (the fallback counter)."""
    total, stack = 0, [os.fspath(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    total += 1
    return total


def _load_scan_outputs():
    path = REPO / "workloads" / "fleetwork.py"
    if not path.exists():
        return None
    mod = sys.modules.get("fleetwork")
    if mod is None:
        spec = importlib.util.spec_from_file_location("fleetwork", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["fleetwork"] = mod  # it registers itself under that name
        try:
            spec.loader.exec_module(mod)
        except Exception:  # being written in parallel; fall back rather than fail the suite
            sys.modules.pop("fleetwork", None)
            return None
    return getattr(mod, "scan_outputs", None)


def scan_count(scan_outputs, root) -> int:
    got = scan_outputs(root)
    return got if isinstance(got, int) else len(got)


def listdir_count(root) -> int:
    """One listdir of ``root``, plus one per sub-folder (the layouts here are one level deep)."""
    names = os.listdir(root)
    subdirs = [f"{root}/{n}" for n in names if os.path.isdir(f"{root}/{n}")]
    return len(names) - len(subdirs) + sum(len(os.listdir(d)) for d in subdirs)


def find_count(root) -> int:
    out = subprocess.run(f"find '{root}' -type f | wc -l", shell=True, check=True, capture_output=True, text=True)
    return int(out.stdout)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, sized):
    """N empty output files, flat and in 256 hash-prefix folders; removed at the end of the module."""
    n = sized(small=2_000, default=200_000, large=200_000)
    root = tmp_path_factory.mktemp("counting")
    names = [f"item-{i:07d}.out" for i in range(n)]
    flat, nested = root / "flat", root / "nested"
    flat.mkdir()
    nested.mkdir()
    for i in range(256):
        (nested / f"{i:02x}").mkdir()
    rel = [f"{prefix(name)}/{name}" for name in names]
    for name, r in zip(names, rel):
        _touch(f"{flat}/{name}")
        _touch(f"{nested}/{r}")
    yield {"n": n, "names": names, "rel": rel, "flat": str(flat), "nested": str(nested)}
    shutil.rmtree(root, ignore_errors=True)


def todo_exists_flat(o):
    flat = o["flat"]
    return [n for n in o["names"] if not os.path.exists(f"{flat}/{n}")]


def todo_scan_flat(o):
    done = {e.name for e in os.scandir(o["flat"])}
    return [n for n in o["names"] if n not in done]


def todo_exists_nested(o):
    nested = o["nested"]
    return [n for n, r in zip(o["names"], o["rel"]) if not os.path.exists(f"{nested}/{r}")]


def todo_scan_nested(o):
    done = set()
    for d in os.scandir(o["nested"]):
        done.update(os.listdir(d.path))
    return [n for n in o["names"] if n not in done]


SKIP = {"exists-flat": todo_exists_flat, "scandir-flat": todo_scan_flat,
        "exists-256": todo_exists_nested, "scandir-256": todo_scan_nested}


@pytest.mark.parametrize("how", list(SKIP))
def test_skip_if_done(benchmark, outputs, sized, how):
    """Find the items left to do (none): exists() per item vs one directory scan, flat vs 256 folders."""
    benchmark.group = "counting: skip-if-done"
    benchmark.extra_info.update(how=how, files=outputs["n"])
    todo = benchmark.pedantic(SKIP[how], args=(outputs,), rounds=sized(small=3, default=3, large=3))
    assert todo == []


@pytest.mark.parametrize("layout", ["flat", "nested"])
@pytest.mark.parametrize("how", ["scan", "listdir", "find"])
def test_count_outputs(benchmark, outputs, sized, layout, how):
    """Count N outputs: scan_outputs / listdir in Python vs `find | wc -l`; find / scan is the progress ratio."""
    scan_outputs = _load_scan_outputs()
    if how == "find":
        counter, count = "find | wc -l", find_count
    elif how == "listdir":
        counter, count = "sum(len(os.listdir))", listdir_count
    elif scan_outputs is not None:
        counter, count = "fleetwork.scan_outputs", lambda root: scan_count(scan_outputs, root)
    else:
        counter, count = "os.scandir walk", walk_count
    benchmark.group = "counting: count outputs"
    benchmark.extra_info.update(how=how, layout=layout, files=outputs["n"], counter=counter)
    got = benchmark.pedantic(count, args=(outputs[layout],), rounds=sized(small=3, default=5, large=5))
    assert got == outputs["n"]
