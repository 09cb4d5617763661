"""`run --until-done` on an AWS fleet in moto (issue 13): an instance deleted in the cloud is a lost node at the
next poll (the provider lists it terminated: no waiting for job.lost_after), and its replacement comes from ONE
more bulk call (a CreateFleet for one instance, counted in tests/support/fake_ec2_fleet.py) and takes the lost
node's shard; the others are left alone.

What moto cannot express: its instances are no machines, so nothing can SSH into them.  The three SSH steps of
a replacement (mount, deploy, start) are recorded here instead of run, and the nodes' side of the run (heartbeats,
outputs, exit files on the shared disk) is written by the test as the nodes would.  Everything else is the real
supervisor, the real AWS provider against moto, the real snapshot of the run state on the shared disk.
(tests/test_chaos.py does the whole thing on a real local fleet.)"""
from __future__ import annotations

import threading
import time

import pytest

from tests.support.cloud import FLEET

from playbooks import progress, supervise
from playbooks.providers import FleetSpec, aws
from playbooks.runs import state as runstate
from playbooks.ssh import fanout

pytestmark = pytest.mark.timeout(120)
ITEMS = 6


class Steps:
    """The SSH steps of a replacement, recorded: which nodes each would have reached."""

    def __init__(self, monkeypatch):
        self.mounted, self.deployed, self.started = [], [], []
        from playbooks import mount
        monkeypatch.setattr(mount, "mount_all", self.step(self.mounted))
        monkeypatch.setattr(supervise, "_deploy_new", lambda c, name, provider, nodes: self.step(self.deployed)(
            c, name, nodes, provider))
        monkeypatch.setattr(fanout, "fan_out", lambda c, name, nodes, fn, step="": self.step(self.started, 4242)(
            c, name, nodes, None))

    @staticmethod
    def step(log, value=None):
        def run(c, name, nodes, *_a):
            log.extend(n.name for n in nodes)
            return [fanout.HostResult(node=n, step="test", ok=True, value=value) for n in nodes]
        return run


def nodes_side(c, record: dict, stop: threading.Event, lost: str) -> None:
    """What the nodes do on the shared disk: fresh heartbeats from every live node but ``lost``; once a
    replacement has joined the run, every output and each live node's exit file."""
    disk = runstate.local_disk(c)
    while not stop.is_set():
        rec = runstate.load_run(c, record["run_id"])
        live = [e["name"] for e in rec["nodes"] if e["name"] != lost]
        for n in live:
            runstate.write_node_file(c, rec["run_id"], n, "heartbeat.json",
                                     {"node": n, "done": 0, "failed": 0, "rate_per_s": 0.0,
                                      "started_at": rec["started_at"], "updated_at": time.time()})
        if any(e.get("replaces") == lost for e in rec["nodes"]):
            for i in range(ITEMS):
                disk.write_bytes(f"out/{i}.jpg", b"done")
            for n in live:
                runstate.write_node_file(c, rec["run_id"], n, "exit.json",
                                         {"code": 0, "finished_at": time.time(), "summary": {"done": 2}})
            return
        time.sleep(0.2)


def test_a_deleted_instance_is_replaced_by_one_more_bulk_call(aws_fleet_ctx, ec2_fleet, tmp_path, monkeypatch):
    c = aws_fleet_ctx
    c.config.shared.root = str(tmp_path / "data")
    c.config.job.poll = 0.2
    c.config.job.lost_after = 600.0          # the loss must be seen from the provider, not from a silent node
    c.config.fleet.price_per_hour = 0.01
    nodes = aws.create(c, FleetSpec(name=FLEET, count=3))
    assert ec2_fleet.calls["CreateFleet"] == 1
    disk = runstate.local_disk(c)
    for i in range(ITEMS):
        disk.write_bytes(f"src/{i}.jpg", b"x")
    disk.mkdirs("out")
    record = {"run_id": "resize-20260101-000000-cafe", "fleet": FLEET, "provider": "aws", "workload": "resize",
              "src": "src", "dst": "out", "args": "", "started_at": time.time(), "shards": 3,
              "nodes": [{"name": n.name, "shard": i} for i, n in enumerate(sorted(nodes, key=lambda n: n.name))]}
    runstate.save_run(disk, record, latest=True)
    steps = Steps(monkeypatch)
    lost = record["nodes"][1]["name"]
    aws.kill_node(c, FLEET, lost)            # the instance is deleted in the cloud
    stop = threading.Event()
    side = threading.Thread(target=nodes_side, args=(c, record, stop, lost), daemon=True)
    side.start()
    try:
        report = supervise.supervise(c, record, max_replacements=2)
    finally:
        stop.set()
        side.join(10)
    assert ec2_fleet.calls["CreateFleet"] == 2 and ec2_fleet.calls["RunInstances"] == 0
    assert ec2_fleet.fleets[1]["TargetCapacitySpecification"]["TotalTargetCapacity"] == "1"
    [new] = [e for e in record["nodes"] if e.get("replaces")]
    assert new["replaces"] == lost and new["shard"] == 1 and new["pid"] == 4242
    # the cloud refilled the fleet under the lost machine's name: the run knows the new node apart
    assert new["machine"] == lost and new["name"] == f"{lost}.2"
    assert next(e for e in record["nodes"] if e["name"] == lost)["replaced_by"] == new["name"]
    assert steps.mounted == steps.deployed == steps.started == [lost]    # the new machine only
    assert (report["nodes_lost"], report["nodes_preempted"], report["nodes_replaced"]) == (1, 0, 1)
    assert report["done"] == ITEMS and report["failed"] == 0 and report["bound"] is None
    assert len([n for n in aws.list_nodes(c, FLEET) if n.state == "running"]) == 3
    snap = progress.snapshot(c, runstate.load_run(c, record["run_id"]))
    assert (snap["nodes_lost"], snap["nodes_replaced"]) == (1, 1)
