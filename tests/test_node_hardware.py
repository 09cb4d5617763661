"""Nodes use their own hardware: workers, start method and chunk size come from the node (its cores, the
profile of its own machine type), never from a profile made on the operator's machine (issue 16, part 1).

The workload on its own, then a real local fleet (``local.cores_per_node`` is what a local node counts), then
what ``deploy`` ships and what the node command gets on the GCE fake and on the moto server.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from tests.support.cloud import FLEET
from tests.support.fleet import make_ctx
from tests.support.workloads import fleetwork, many_jpegs, run

from playbooks import deploy, fleet, mount, progress, run as run_step, teardown
from playbooks.measure import profiles
from playbooks.ssh import keys as sshkeys
from playbooks.providers import FleetSpec


def summary(stderr: str) -> dict:
    return json.loads(stderr.split("fleetwork: summary ", 1)[1].splitlines()[0])


# ------------------------------------------------------------------------------------------- the workload

@pytest.mark.parametrize("profile_cores", [64, 1])
def test_a_profile_made_on_other_cores_is_not_used(tmp_path, profile_cores):
    """A 64-core profile on a 2-core machine gave 64 workers, a 1-core one gave 1: now both give 2."""
    many_jpegs(tmp_path / "src", 24, side=96)
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"cores": profile_cores, "start_method": "spawn", "chunksize": 7,
                                   "per_task_overhead_us": 5.0}))
    r = run("resize", "--src", tmp_path / "src", "--dst", tmp_path / "dst",
            env={"FLEETBOOK_PROFILE": str(profile), "FLEETBOOK_CORES": "2"})
    assert r.returncode == 0, r.stderr
    s = summary(r.stderr)
    assert s["workers"] == 2 and s["start_method"] == "fork" and s["chunksize"] != 7
    assert s["profile"] is None and s["profile_ignored"] == str(profile)
    assert f"measured on {profile_cores} cores and this machine has 2: not used" in r.stderr


def test_the_machines_own_profile_is_used(tmp_path):
    many_jpegs(tmp_path / "src", 24, side=96)
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"cores": 3, "start_method": "forkserver", "chunksize": 2}))
    r = run("resize", "--src", tmp_path / "src", "--dst", tmp_path / "dst",
            env={"FLEETBOOK_PROFILE": str(profile), "FLEETBOOK_CORES": "3"})
    assert r.returncode == 0, r.stderr
    s = summary(r.stderr)
    assert (s["workers"], s["start_method"], s["chunksize"], s["profile"]) == (3, "forkserver", 2, str(profile))


def test_default_workers_count_this_machine(monkeypatch):
    monkeypatch.setenv("FLEETBOOK_CORES", "5")
    assert fleetwork.machine_cores() == 5
    assert fleetwork.default_workers({"cores": 64}) == 5 and fleetwork.default_workers({"cores": 1}) == 5
    assert fleetwork.default_workers({"cores": 5, "workers": 4}) == 4    # the machine's own profile may say
    assert fleetwork.default_workers({"cores": 64, "workers": 64}) == 5
    assert fleetwork.default_start_method({"cores": 64, "start_method": "spawn"}) == "fork"
    assert fleetwork.default_start_method({"cores": 5, "start_method": "spawn"}) == "spawn"
    monkeypatch.setenv("FLEETBOOK_CORES", "")
    import os
    assert fleetwork.machine_cores() == len(os.sched_getaffinity(0))


# ------------------------------------------------------------------------------------------- a local fleet

def _node_summary(c, record) -> dict:
    from playbooks.runs import state as runstate
    from playbooks.settings.defaults import shared_root
    state = shared_root(c) / runstate.node_state_rel(record["run_id"], record["nodes"][0]["name"])
    return summary((state / "log.txt").read_text())


@pytest.mark.fleet
def test_local_node_counts_cores_per_node_and_gets_its_own_profile(fleet_base):
    name = FLEET + fleet_base.name[:4]
    c = make_ctx(fleet_base, local__cores_per_node=2, job__poll=0.1,
                 bench__profile=str(fleet_base / "operator-profile.json"),
                 bench__profiles=str(fleet_base / "profiles"))
    # the operator's machine, measured: 64 cores and spawn (what used to reach every node)
    Path(c.config.bench.profile).write_text(json.dumps({"cores": 64, "start_method": "spawn"}))
    own = profiles.profile_file(c, "local", "2cpu")
    assert own == fleet_base / "profiles" / "local-2cpu.json"
    own.parent.mkdir()
    own.write_text(json.dumps({"cores": 2, "start_method": "forkserver", "machine_type": "2cpu"}))
    many_jpegs(fleet_base / "data" / "src", 12, side=96)
    try:
        fleet.create(c, n=1, name=name)
        mount.mount(c, name=name)
        deploy.deploy(c, name=name)
        node = fleet.nodes_or_exit(c, name)[1][0]
        shipped = Path(node.workdir) / "workloads" / "profile.json"
        assert json.loads(shipped.read_text())["start_method"] == "forkserver"   # its own type's, not 64 cores
        record = run_step.start(c, name, [node], "resize", "src", "out1", "")
        assert progress.wait_until_finished(c, record)["done"] == 12
        s = _node_summary(c, record)
        assert (s["workers"], s["start_method"], s["profile"]) == (2, "forkserver", str(shipped))
        # no profile of its type: the stale one goes, and the node still counts 2 cores, never 64
        own.unlink()
        deploy.deploy(c, name=name)
        assert not shipped.exists()
        record = run_step.start(c, name, [node], "resize", "src", "out2", "")
        assert progress.wait_until_finished(c, record)["done"] == 12
        s = _node_summary(c, record)
        assert (s["workers"], s["start_method"], s["profile"]) == (2, "fork", None)
    finally:
        teardown.teardown(c, name=name)


# ------------------------------------------------------------------------------------------- cloud fakes

def _point_at(monkeypatch, module, port: int, tmp_path: Path):
    """The fakes' addresses are fictitious: every node is the loopback sshd, each with its own workdir and
    this interpreter (which has PIL)."""
    real = module._node
    monkeypatch.setattr(module, "_node", lambda c, inst: dataclasses.replace(
        real(c, inst), host="127.0.0.1", port=port, python=sys.executable,
        workdir=str(tmp_path / "work" / real(c, inst).name)))


def _ship(c, provider: str, host_key: str, port: int, measured: str | None, tmp_path: Path) -> dict:
    """Operator profile (64 cores), a profile of ``measured`` only; deploy; {node: shipped profile or None}."""
    sshkeys.pin(Path(c.config.fleet.state_dir) / FLEET / "known_hosts", "127.0.0.1", port, host_key)
    c.config.bench.profile = str(tmp_path / "operator.json")
    c.config.bench.profiles = str(tmp_path / "profiles")
    Path(c.config.bench.profile).write_text(json.dumps({"cores": 64, "start_method": "spawn"}))
    for old in Path(c.config.bench.profiles).glob("*.json"):
        old.unlink()
    if measured:
        mine = profiles.profile_file(c, provider, measured)
        mine.parent.mkdir(exist_ok=True)
        mine.write_text(json.dumps({"cores": fleetwork.machine_cores(), "start_method": "forkserver",
                                    "machine_type": measured}))
    deploy.deploy(c, name=FLEET, provider=provider)
    shipped = {}
    for node in fleet.nodes_or_exit(c, FLEET, provider)[1]:
        f = Path(node.workdir) / "workloads" / "profile.json"
        shipped[node.name] = json.loads(f.read_text()) if f.exists() else None
        # the node command: no worker count and no core count from the operator's side
        cmd = run_step.node_command(node, {"run_id": "r", "workload": "resize", "src": "s", "dst": "d",
                                           "nodes": [{}]}, 0, [], None, profiles.node_env(c, provider))
        assert "--workers" not in cmd and "FLEETBOOK_CORES" not in cmd
    return shipped


def test_a_node_of_another_type_gets_that_types_profile(tmp_path):
    """The type a cloud reports in the node's labels (providers.TYPE_KEY) wins over the provider's setting."""
    from playbooks.providers import Node
    c = make_ctx(tmp_path, bench__profiles=str(tmp_path / "profiles"), gcp__machine_type="e2-standard-2")
    (tmp_path / "profiles").mkdir()
    for t in ("e2-standard-2", "e2-standard-8"):
        profiles.profile_file(c, "gcp", t).write_text("{}")
    big = Node(name="n1", host="h", labels={profiles.TYPE_KEY: "e2-standard-8"})
    assert deploy.files_to_ship(c, "gcp", big)[-1] == (str(profiles.profile_file(c, "gcp", "e2-standard-8")),
                                                       "profile.json")
    assert profiles.machine_type(c, "gcp", Node(name="n0", host="h")) == "e2-standard-2"
    assert profiles.machine_type(c, "local", big) == "1cpu"             # local.cores_per_node
    assert all(name != "profile.json" for _, name in deploy.files_to_ship(
        c, "gcp", Node(name="n2", host="h", labels={profiles.TYPE_KEY: "e2-micro"})))


def test_gcp_nodes_get_the_profile_of_their_own_machine_type(gcp_ctx, gce, fleet_sshd, monkeypatch, tmp_path):
    from playbooks.providers import gcp
    port, host_key, _ = fleet_sshd
    _point_at(monkeypatch, gcp, port, tmp_path)
    gcp_ctx.config.gcp.machine_type = "e2-standard-4"
    gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=2))
    mine = {"cores": fleetwork.machine_cores(), "start_method": "forkserver", "machine_type": "e2-standard-4"}
    assert _ship(gcp_ctx, "gcp", host_key, port, "e2-standard-4", tmp_path) == {"demo-0001": mine,
                                                                              "demo-0002": mine}
    record = json.loads((Path(gcp_ctx.config.fleet.state_dir) / FLEET / "deploy.json").read_text())
    assert all(v["profile"].endswith("gcp-e2-standard-4.json") for v in record.values())
    # on the node, the workload takes its start method from its own type's profile and its own cores
    node = gcp.list_nodes(gcp_ctx, FLEET)[0]
    many_jpegs(tmp_path / "src", 8, side=96)
    from playbooks.ssh.fanout import connect, q, run_checked
    conn = connect(gcp_ctx, FLEET, node)
    try:
        run_checked(conn, f"cd {q(node.workdir)} && {q(node.python)} workloads/resize.py --src "
                          f"{q(str(tmp_path / 'src'))} --dst {q(str(tmp_path / 'dst'))} "
                          f"> {q(str(tmp_path / 'log'))} 2>&1", 60)
        s = summary((tmp_path / "log").read_text())
    finally:
        conn.close()
    assert (s["workers"], s["start_method"]) == (min(8, fleetwork.machine_cores()), "forkserver")
    assert s["profile"].endswith("workloads/profile.json")
    # measured on another type only: the nodes lose the stale profile, and the operator's never reaches them
    assert _ship(gcp_ctx, "gcp", host_key, port, "n2-standard-4", tmp_path) == {"demo-0001": None,
                                                                              "demo-0002": None}
    gcp.terminate(gcp_ctx, FLEET)


def test_aws_nodes_get_the_profile_of_their_own_instance_type(aws_ctx, fleet_sshd, monkeypatch, tmp_path):
    from playbooks.providers import aws
    port, host_key, _ = fleet_sshd
    _point_at(monkeypatch, aws, port, tmp_path)
    aws_ctx.config.aws.user = __import__("getpass").getuser()
    aws_ctx.config.aws.instance_type = "c6i.large"
    aws.create(aws_ctx, FleetSpec(name=FLEET, count=1))
    shipped = _ship(aws_ctx, "aws", host_key, port, "c6i.large", tmp_path)
    assert [p["machine_type"] for p in shipped.values()] == ["c6i.large"]
    assert list(_ship(aws_ctx, "aws", host_key, port, None, tmp_path).values()) == [None]
    aws.terminate(aws_ctx, FLEET)
