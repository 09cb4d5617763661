"""Crash safety: a node killed at any point leaves no partial output, and a re-run completes the set."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from tests.support.workloads import PY, check_jpeg_outputs, fleetwork, many_jpegs, run, script, summary_of, temp_files


@pytest.fixture(scope="module")
def photo_src(tmp_path_factory):
    src = tmp_path_factory.mktemp("crash") / "src"
    return src, many_jpegs(src, 40, side=480)


def _loads(path) -> bool:
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except OSError:
        return False


def assert_complete(src, dst, names):
    r = run("resize", "--src", src, "--dst", dst, "--workers", 2)
    assert r.returncode == 0, r.stderr
    s = summary_of(r.stdout)
    assert s["done"] + s["skipped"] == len(names) and s["failed"] == 0, s
    check_jpeg_outputs(dst, names)
    assert not temp_files(dst), temp_files(dst)
    assert fleetwork.read_failures(str(dst)) == {}
    return s


@pytest.mark.parametrize("point, workers", [("after-tmp-write", 1), ("mid-write", 1), ("after-tmp-write", 2),
                                            ("mid-write", 2)])
def test_fault_hook_then_rerun(photo_src, tmp_path, point, workers):
    src, names = photo_src
    dst = tmp_path / "dst"
    r = run("resize", "--src", src, "--dst", dst, "--workers", workers, "--chunksize", 2,
            env={"FLEETBOOK_FAULT": f"{point}:3"})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)   # the runner died with its worker
    temps = temp_files(dst)
    assert temps, "the fault left its temp file behind"
    if point == "mid-write":
        # really a partial file: the faulty worker's (with 2 workers the other one may have died with a whole
        # temp not yet renamed, which is no output either)
        assert any(not _loads(t) for t in temps), temps
    # whatever was renamed is a complete image (never a partial one)
    done_before = fleetwork.scan_outputs(str(dst))
    assert len(done_before) < len(names)
    for out in done_before:
        check_jpeg_outputs(dst, [out])
    s = assert_complete(src, dst, names)
    assert s["skipped"] == len(done_before)


def test_sigkill_at_seeded_random_times(photo_src, tmp_path):
    src, names = photo_src
    dst = tmp_path / "dst"
    rng = random.Random(20261123)
    env = dict(os.environ, FLEETBOOK_PROFILE="/nonexistent")
    env.pop("FLEETBOOK_FAULT", None)
    killed = 0
    for _ in range(3):
        before = len(fleetwork.scan_outputs(str(dst)))
        p = subprocess.Popen([PY, script("resize"), "--src", str(src), "--dst", str(dst), "--workers", "2",
                              "--chunksize", "1", "--no-draft"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.time() + 30                 # wait until this run has renamed an output ...
        while p.poll() is None and len(fleetwork.scan_outputs(str(dst))) <= before and time.time() < deadline:
            time.sleep(0.003)
        time.sleep(rng.uniform(0.0, 0.03))           # ... then kill at a seeded random moment
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)         # the node vanishes: runner + workers
            killed += 1
        p.wait(30)
        for out in fleetwork.scan_outputs(str(dst)):  # never a partial output
            check_jpeg_outputs(dst, [out])
    assert killed >= 2
    assert_complete(src, dst, names)
