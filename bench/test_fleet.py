"""The runbook on a real local fleet against one plain process pool on the same machine.

Questions:

* ``fleet: runbook vs single machine`` — what does the runbook cost?  The same images, the same workload, the
  same number of worker processes (one node per core, ``local.cores_per_node=1``), once as
  ``python workloads/resize.py`` on the head's own disk and once as ``invoke run --wait`` on a local fleet whose
  nodes read and write through sshfs.  ``extra_info.throughput_ratio`` is fleet images/s over single-machine
  images/s: 1.0 means the runbook costs nothing; the aim is at least 0.8.
* ``fleet: counting over sshfs`` — why does ``invoke progress`` count on the head?  One ``scan_outputs`` of the
  same finished folder on the head's disk and from a node through its sshfs mount (timed inside the node).
  ``extra_info.sshfs_over_local`` is how many times slower the mount is.

How to read it: the ratios, not the seconds (a shared 2-core machine is noisy).
"""
from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
from tests.support.fleet import bench_base, make_ctx  # noqa: E402

from playbooks import deploy, fleet, mount, progress, run, teardown  # noqa: E402
from playbooks.runs import state as runstate
from playbooks.providers import local  # noqa: E402
from playbooks.runs.samples import make_samples  # noqa: E402

pytestmark = pytest.mark.fleet
NAME = "bench" + secrets.token_hex(2)


@pytest.fixture(scope="module")
def bench_fleet(tmp_path_factory, sized, n_workers):
    base = bench_base(tmp_path_factory, "benchfleet")
    c = make_ctx(base, local__cores_per_node=1, job__poll=0.1)
    images = sized(small=24, default=480, large=3000)
    make_samples(base / "data" / "src", images)
    try:
        fleet.create(c, n=n_workers, name=NAME)
        mount.mount(c, name=NAME)
        deploy.deploy(c, name=NAME)
        yield c, base, images
    finally:
        teardown.teardown(c, name=NAME)
        shutil.rmtree(base, ignore_errors=True)


def single_machine(base: Path, dst: str, workers: int, workload: str = "resize") -> float:
    shutil.rmtree(base / "data" / dst, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "workloads" / f"{workload}.py"), "--src", str(base / "data" / "src"),
                    "--dst", str(base / "data" / dst), "--workers", str(workers)], check=True, capture_output=True)
    return time.perf_counter() - t0


@pytest.mark.parametrize("workload", ["resize", "features"])
def test_runbook_vs_single_machine(benchmark, bench_fleet, n_workers, workload):
    """Throughput of `invoke run --wait` on a local fleet over that of one process pool (same cores).

    resize is light (a few ms per image with draft decoding), so the sshfs stack (sshfs, ssh, sshd and
    sftp-server, all on this machine's cores) weighs as much as the work; features (ORB, ~15 ms per image) is
    closer to what a fleet is rented for.
    """
    benchmark.group = "fleet: runbook vs single machine"
    c, base, images = bench_fleet
    single = min(single_machine(base, f"single-{workload}", n_workers, workload) for _ in range(2))
    nodes = local.list_nodes(c, NAME)

    def clear():
        shutil.rmtree(base / "data" / "fleet", ignore_errors=True)
        return (), {}

    def runbook():
        snap = progress.wait_until_finished(c, run.start(c, NAME, nodes, workload, "src", "fleet", ""))
        assert snap["done"] == images

    benchmark.pedantic(runbook, setup=clear, rounds=2, iterations=1)
    fleet_s = benchmark.stats.stats.min if benchmark.stats else None
    if fleet_s:
        benchmark.extra_info.update(single_machine_s=round(single, 3), fleet_s=round(fleet_s, 3), images=images,
                                    throughput_ratio=round(single / fleet_s, 3))
        print(f"\n{workload}: runbook on {len(nodes)} local nodes: {images / fleet_s:.1f} images/s; one pool of "
              f"{n_workers}: {images / single:.1f} images/s; ratio {single / fleet_s:.2f}")


def test_counting_over_sshfs(benchmark, bench_fleet):
    """One scan_outputs of the finished folder: on the head's disk (timed) and through a node's mount."""
    benchmark.group = "fleet: counting over sshfs"
    c, base, images = bench_fleet
    fw = runstate.fleetwork()
    out = base / "data" / "single-resize"
    if not out.exists():
        single_machine(base, "single-resize", 2)
    found = benchmark(fw.scan_outputs, str(out))
    assert len(found) == images
    node = local.list_nodes(c, NAME)[0]
    script = ("import sys, time; sys.path.insert(0, 'workloads'); import fleetwork as f; t = time.perf_counter(); "
              f"n = len(f.scan_outputs({node.mountpoint + '/single-resize'!r})); print(n, time.perf_counter() - t)")
    from playbooks.ssh.fanout import connect, q, run_checked
    conn = connect(c, NAME, node)
    try:
        n, remote_s = run_checked(conn, f"cd {q(node.workdir)} && {q(node.python)} -c {q(script)}").split()
    finally:
        conn.close()
    assert int(n) == images
    if benchmark.stats:
        ratio = float(remote_s) / benchmark.stats.stats.min
        benchmark.extra_info.update(sshfs_s=float(remote_s), sshfs_over_local=round(ratio, 1))
        print(f"\nscan of {images} outputs: sshfs {float(remote_s) * 1e3:.1f} ms, local "
              f"{benchmark.stats.stats.min * 1e3:.2f} ms ({ratio:.0f}x)")
    json.dumps(benchmark.extra_info)
