"""Does the plan predict reality?  ``invoke plan`` for a local fleet of 1, 2 and 3 nodes against the measured
wall time of ``run --wait`` on the same images.

Steps, as a user would take them: a local fleet of 3 nodes (``local.cores_per_node=1``); ``invoke bench
--node`` on its first node (the per-item time of each workload on a sample of these very images, read through
the node's mount); this machine's own profile for its parallel efficiency (``bench/test_items.py`` run here,
as ``invoke bench`` would); then for n = 1, 2, 3: the plan's ``run_s`` (the time ``run --wait`` takes on a fleet
that is up) and ``run.start`` + ``progress.wait_until_finished`` on the first n nodes into a fresh folder,
timed here (what ``invoke run --wait`` does, minus the start of the ``invoke`` command itself; ``job.poll`` is
0.2 s so that the poll's granularity does not hide the run's own time).

How to read it: ``extra_info`` has ``predicted_s``, ``measured_s`` and ``error`` = predicted / measured - 1 (the
aim: within 25 %), and the bottleneck the plan names.  The shared disk's per-item cost is DESIGN.md's default
until the profile measures it.
"""
from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from fleet_fixtures import make_ctx  # noqa: E402

from playbooks import bench, bench_profile, fleet, mount, plan, planning, progress, run, teardown  # noqa: E402
from playbooks.samples import make_samples  # noqa: E402

pytestmark = pytest.mark.fleet
NAME = "plan" + secrets.token_hex(2)
RESULTS: dict[int, dict] = {}


@pytest.fixture(scope="module")
def measured_fleet(tmp_path_factory, sized, bench_scale):
    if os.geteuid() == 0:
        base = Path("/var/lib/fleetbook-tests") / secrets.token_hex(4)
        base.mkdir(parents=True)
    else:
        base = tmp_path_factory.mktemp("planfleet")
    c = make_ctx(base, local__cores_per_node=1, job__poll=0.2, bench__profile=str(base / "profile.json"),
                 bench__profiles=str(base / "profiles"))
    images = sized(small=120, default=600, large=3000)
    make_samples(base / "data" / "src", images)
    try:
        fleet.create(c, n=3, name=NAME)
        mount.mount(c, name=NAME)
        from playbooks import deploy
        deploy.deploy(c, name=NAME)
        nodes = fleet.nodes_or_exit(c, NAME)[1]
        with redirect_stdout(io.StringIO()):
            bench.run(c, node=nodes[0].name, name=NAME, scale=bench_scale)
        here = base / "here.json"          # this machine's parallel efficiency, as `invoke bench` measures it
        subprocess.run([sys.executable, "-m", "pytest", "bench/test_items.py", "-q", "-p", "no:cacheprovider",
                        "-k", "parallel", f"--bench-scale={bench_scale}", f"--benchmark-json={here}"],
                       cwd=REPO, check=True, capture_output=True)
        (base / "profile.json").write_text(json.dumps(bench_profile.build_profile(json.loads(here.read_text()))))
        deploy.deploy(c, name=NAME)       # every node now has the profile of its machine type
        yield c, base, nodes, images
    finally:
        teardown.teardown(c, name=NAME)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_plan_predicts_run_wait(benchmark, measured_fleet, n):
    benchmark.group = "plan: predicted vs measured run --wait"
    c, base, nodes, images = measured_fleet
    with redirect_stdout(io.StringIO()):
        result = plan.plan(c, workload="resize", src="src", provider="local", sizes="1,2,3", json_=True)
    predicted = next(o for o in result["options"] if o["nodes"] == n)

    def clear():
        shutil.rmtree(base / "data" / "out", ignore_errors=True)
        return (), {}

    times = []

    def runbook():
        t0 = time.perf_counter()
        snap = progress.wait_until_finished(c, run.start(c, NAME, nodes[:n], "resize", "src", "out", ""))
        times.append(time.perf_counter() - t0)
        assert snap["done"] == images

    with redirect_stdout(io.StringIO()):
        benchmark.pedantic(runbook, setup=clear, rounds=1, iterations=1)
    measured = min(times)
    info = {"nodes": n, "images": images, "predicted_s": predicted["run_s"], "measured_s": round(measured, 3),
            "error": round(predicted["run_s"] / measured - 1, 3), "bottleneck": predicted["bottleneck"],
            "predicted_items_per_s": predicted["items_per_s"], "item_ms": round(result["model"]["item_s"] * 1e3, 3),
            "disk": result["inputs"]["shared_disk"] == planning.DEFAULT_DISK_SOURCE and "default" or "measured"}
    benchmark.extra_info.update(info)
    RESULTS[n] = info
    print(f"\nplan vs run --wait, {n} node(s), {images} images: predicted {predicted['run_s']:.2f} s, measured "
          f"{measured:.2f} s ({info['error']:+.0%}), bottleneck {predicted['bottleneck']}")
