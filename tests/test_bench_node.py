"""`invoke bench --node NODE` on a real local fleet node: the machine-level benchmarks run on the node (its
user, its cores, its mount of the shared disk), the profile comes back per machine type, deploy ships it."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from tests.support.fleet import make_ctx

from playbooks import bench, deploy, fleet, mount, teardown
from playbooks.measure import profiles
from playbooks.runs.samples import make_samples

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def bench_fleet(fleet_base):
    name = "bn" + fleet_base.name[:4]
    c = make_ctx(fleet_base, local__cores_per_node=1, bench__profiles=str(fleet_base / "profiles"))
    make_samples(fleet_base / "data" / "src", 10)
    try:
        fleet.create(c, n=1, name=name)
        yield c, name
    finally:
        teardown.teardown(c, name=name)


def test_bench_node_needs_the_mount_and_a_known_node(bench_fleet):
    c, name = bench_fleet
    with pytest.raises(Exit, match=r"no running node 'nope' in this fleet: choose one of"):
        bench.run(c, node="nope", name=name, scale="small")
    node = fleet.nodes_or_exit(c, name)[1][0]
    with pytest.raises(Exit, match="not mounted on .*: run `invoke mount` first"):
        bench.run(c, node=node.name, name=name, scale="small")
    with pytest.raises(Exit, match="go with --node"):
        bench.run(c, src="src")
    for outside in ("../etc", "/etc"):
        with pytest.raises(Exit, match="inside shared.root"):
            bench.run(c, node=node.name, name=name, scale="small", src=outside)


def test_bench_node_measures_the_node_and_deploy_ships_its_profile(bench_fleet, capsys):
    c, name = bench_fleet
    node = fleet.nodes_or_exit(c, name)[1][0]
    mount.mount(c, name=name)
    with pytest.raises(Exit, match="elsewhere is not a folder of the shared root"):
        bench.run(c, node=node.name, name=name, scale="small", src="elsewhere")
    t0 = time.monotonic()
    bench.run(c, node=node.name, name=name, scale="small", sample=6)
    took = time.monotonic() - t0
    out = profiles.profile_file(c, "local", "1cpu")
    p = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert f"profile: {out}" in printed and "per item" in printed
    assert (p["provider"], p["machine_type"], p["node"], p["measured_on"]) == ("local", "1cpu", node.name, "node")
    assert p["cores"] == 1                                  # local.cores_per_node, not this machine's CPUs
    assert p["cpu_model"] and p["memory_bytes"] > 2**26 and p["cpus"] == os.cpu_count()
    assert set(p["pool_start_s"]) == {"fork", "spawn", "forkserver"} and p["start_method"] in p["pool_start_s"]
    assert p["per_task_overhead_us"] > 0
    assert set(p["item_seconds"]) == {"resize", "edges", "features", "gridsearch"}, printed[-3000:]
    assert all(s > 0 for s in p["item_seconds"].values())
    assert p["items"]["resize"]["items"] == 6 and p["items"]["resize"]["in_bytes"] > 1000
    assert p["sample"] == f"{node.mountpoint}/src"          # the real inputs, through the node's own mount
    assert set(p["run_start_s"]) == {"resize", "edges", "features", "gridsearch"}
    assert p["parallel_efficiency"] is not None
    # the shared disk's cost, from one real run of each probed workload through the node's mount
    assert set(p["shared_disk"]) == {"resize", "features"}, printed[-3000:]
    for workload, d in p["shared_disk"].items():
        assert d["items"] == 10 and d["mount_processes"] >= 2          # sshfs and its ssh
        assert d["node_cpu_s_per_item"] > 0 and d["head_cpu_s_per_item"] > 0
        assert d["item_wall_s"] > d["node_cpu_s_per_item"] / 10        # one worker waits for its mount
        # a run with nothing to do costs its interpreter and imports; the rest of the runner's CPU is per item
        assert 0.01 < d["start_cpu_s"] < d["work_cpu_s_per_item"] * d["items"], d
        assert d["run_cpu_s_per_item"] == pytest.approx(d["work_cpu_s_per_item"] - d["start_cpu_s"] / d["items"],
                                                        abs=1e-5)
        assert d["help_cpu_s_per_item"] is not None and d["help_cpu_s_per_item"] >= 0, d   # two shards at once
    assert "shared disk per item" in printed
    assert not (Path(c.config.shared.root) / ".fleetbook" / "probe" / node.name / "src").exists()   # the scratch is gone
    # the node ran it as itself: its own user and home, the bench files copied there
    assert (Path(node.workdir) / "bench" / "test_items.py").is_file()
    assert not (Path(node.workdir) / "workloads" / "profile.json").exists()
    deploy.deploy(c, name=name)
    shipped = json.loads((Path(node.workdir) / "workloads" / "profile.json").read_text())
    assert shipped == p
    print(f"bench --node took {took:.1f} s")
