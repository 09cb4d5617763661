"""Does the plan predict reality?  ``invoke plan`` for a local fleet of 1, 2 and 3 nodes against the measured
wall time of ``run --wait`` on the same images.

Steps, as a user would take them: a local fleet of 3 nodes (``local.cores_per_node=1``); ``invoke bench
--node`` on its first node (the per-item time of each workload on a sample of these very images, read through
the node's mount, and how far this machine's CPUs scale); then for n = 1, 2, 3: the plan's ``run_s`` (the time
``run --wait`` takes on a fleet that is up) and ``run.start`` + ``progress.wait_until_finished`` on the first
n nodes into a fresh folder, timed here (what ``invoke run --wait`` does, minus the start of the ``invoke``
command itself; ``job.poll`` is 0.2 s so that the poll's granularity does not hide the run's own time).

How to read it: ``extra_info`` has ``predicted_s``, ``measured_s`` and ``error`` = predicted / measured - 1 (the
aim: within 25 %), and the bottleneck the plan names.  The shared disk's per-item cost (node and head CPU, one
worker's wait on it) comes from ``bench --node``'s probe (``bench/disk_probe.py``); as root, the same figures
measured during each run here are in ``extra_info`` too (``disk_ms_node``, ``disk_ms_head``).
"""
from __future__ import annotations

import io
import os
import secrets
import shutil
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
from tests.support.fleet import fleet_base, make_ctx  # noqa: E402,F401 - fleet_base: a fixture

from playbooks import bench, deploy, fleet, mount, plan, progress, run, teardown  # noqa: E402
from playbooks.measure import planning
from playbooks.runs.samples import make_samples  # noqa: E402

pytestmark = pytest.mark.fleet
NAME = "plan" + secrets.token_hex(2)


@pytest.fixture(scope="module")
def measured_fleet(fleet_base, sized, bench_scale):
    base = fleet_base
    c = make_ctx(base, local__cores_per_node=1, job__poll=0.2, bench__profile=str(base / "profile.json"),
                 bench__profiles=str(base / "profiles"))
    images = sized(small=120, default=600, large=3000)
    make_samples(base / "data" / "src", images)
    try:
        fleet.create(c, n=3, name=NAME)
        mount.mount(c, name=NAME)
        deploy.deploy(c, name=NAME)
        nodes = fleet.nodes_or_exit(c, NAME)[1]
        with redirect_stdout(io.StringIO()):
            bench.run(c, node=nodes[0].name, name=NAME, scale=bench_scale)
        deploy.deploy(c, name=NAME)       # every node now has the profile of its machine type
        yield c, base, nodes, images
    finally:
        teardown.teardown(c, name=NAME)


def disk_cpu(c) -> tuple[float, float] | None:
    """CPU seconds so far of the shared disk: the nodes' sshfs and ssh processes (as root: the node users'),
    and the head sshd's children (the SFTP sessions).  None without per-node users."""
    if os.geteuid() != 0:
        return None
    from playbooks.ssh import daemons as procs
    from playbooks.ssh.fanout import fleet_dir
    node = head = 0.0
    for proc in psutil.process_iter(["username", "name"]):
        try:
            if (proc.info["username"] or "").startswith(f"fb-{NAME}-") and proc.info["name"] in ("sshfs", "ssh"):
                t = proc.cpu_times()
                node += t.user + t.system
        except psutil.Error:
            continue
    pid = procs.read_pid(fleet_dir(c, NAME) / "head" / "sshd.pid")
    try:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                t = child.cpu_times()
                head += t.user + t.system
            except psutil.Error:
                continue
    except (psutil.Error, TypeError, ValueError):
        return None
    return node, head


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

    before = disk_cpu(c)
    with redirect_stdout(io.StringIO()):
        benchmark.pedantic(runbook, setup=clear, rounds=1, iterations=1)
    after = disk_cpu(c)
    measured = min(times)
    if before and after:    # the same model with the shared disk's cost measured in this very run
        node_s, head_s = ((a - b) / images for a, b in zip(after, before))
        m = planning.Model(**{**result["model"], "links": (), "node_disk_s": node_s, "head_disk_s": head_s})
        benchmark.extra_info.update(disk_ms_node=round(node_s * 1e3, 3), disk_ms_head=round(head_s * 1e3, 3),
                                    predicted_with_measured_disk_s=planning.option(m, n)["run_s"])
    info = {"nodes": n, "images": images, "predicted_s": predicted["run_s"], "measured_s": round(measured, 3),
            "error": round(predicted["run_s"] / measured - 1, 3), "bottleneck": predicted["bottleneck"],
            "predicted_items_per_s": predicted["items_per_s"], "item_ms": round(result["model"]["item_s"] * 1e3, 3),
            "disk": result["inputs"]["shared_disk"] == planning.DEFAULT_DISK_SOURCE and "default" or "measured"}
    benchmark.extra_info.update(info)
    x = benchmark.extra_info
    print(f"\nplan vs run --wait, {n} node(s), {images} images: predicted {predicted['run_s']:.2f} s, measured "
          f"{measured:.2f} s ({info['error']:+.0%}), bottleneck {predicted['bottleneck']}; item "
          f"{info['item_ms']} ms, efficiency {result['model']['efficiency']}, machine "
          f"{result['model']['machine_efficiency']}" + (
              f"; disk measured node {x['disk_ms_node']} ms head {x['disk_ms_head']} ms per item: predicted "
              f"{x['predicted_with_measured_disk_s']:.2f} s" if "disk_ms_node" in x else ""))
