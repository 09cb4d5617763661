"""`run --until-done` on a cloud fleet made on the GCE fake and on moto: a deleted instance is a lost node; its
replacement comes from one more bulk call (GCE bulkInsert, EC2 RunInstances), gets its host key pinned from the
cloud's word (guest attributes, console output), mounts the head through its own reverse tunnel, and finishes
the run.

The instances are SSH'd at a real sshd on this machine (one sshd, two loopback addresses: the first node at
127.0.0.1, its replacement at 127.0.0.2, so that the replacement's host key must be pinned anew).  Deleting an
instance in a fake does not stop what runs "on" it here, so the test does what the machine's death does: it
kills the node's processes (its workload, its sshfs, its reverse tunnel).  Found with it: a login shell that is
bash held `run`'s start open until the workload ended; a replacement's host key was never pinned; GCE's
bulkInsert may give the replacement the lost node's very name."""
from __future__ import annotations

import getpass
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.support.cloud import FLEET, free_port, run_fleet_sshd
from tests.support.fleet import check_resized, outputs
from tests.support.metadata import metadata  # noqa: F401 - a fixture

from playbooks import deploy, fleet, mount, progress, run, supervise
from playbooks.runs.samples import make_samples
from playbooks.settings.defaults import fleet_dir

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(300)]
ADDRESSES = ("127.0.0.1", "127.0.0.2")


@pytest.fixture
def two_address_sshd(tmp_path):
    """One real sshd answering on two loopback addresses (the two "machines"), its sessions' python3 the
    project's venv (the image's python3 with Pillow and numpy)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "python3"            # a link would lose the venv (found beside the path it is run by)
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    shim.chmod(0o755)
    for port, host_key, d in run_fleet_sshd(tmp_path, ADDRESSES, ["AllowTcpForwarding remote"], str(bin_dir)):
        yield port, host_key, d / "home"


def bulk_bodies(gce):
    return [b for p, b in gce.bodies if p.endswith("/instances/bulkInsert")]


def _kill_machine(c, node_name: str, mountpoint: str, record: dict) -> None:
    """What the death of the VM does to what ran on it: its workload, its sshfs mount, its reverse tunnel."""
    entry = next((e for e in record["nodes"] if e["name"] == node_name), {})
    if entry.get("pid"):
        try:
            os.killpg(int(entry["pid"]), signal.SIGKILL)       # setsid: the workload leads its own group
        except (ProcessLookupError, PermissionError):
            pass
    _unmount(mountpoint)
    pid_file = fleet_dir(c, FLEET) / "tunnels" / f"{node_name}.pid"
    try:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
    except (OSError, ValueError):
        pass


def _unmount(mountpoint: str) -> None:
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["name"] == "sshfs" and mountpoint in cmd:
            p.kill()
    subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True)


def _gcp_cloud(request, port, host_key):
    """The GCE fake: every instance at the sshd, the first one's replacement (whatever its name) at the second
    address; host keys from the guest attributes.  Returns (context, provider, delete one node, bulk calls)."""
    gce = request.getfixturevalue("gce")
    c = request.getfixturevalue("gcp_ctx")
    gce.host_keys = [host_key]
    c.config.gcp.ssh_port = port
    c.config.gcp.tunnel_port = free_port()

    def moved(_first):
        for name in ("demo-0001", "demo-0002"):
            gce.addresses[name] = (ADDRESSES[1], "10.128.0.3")

    return c, "gcp", moved, gce.preempt, lambda: len(bulk_bodies(gce)), lambda: int(bulk_bodies(gce)[-1]["count"])


def _aws_cloud(request, port, host_key, create_fleet: bool = False):
    """moto: its public IPs are fictitious (never connected to), so instances are pointed at the sshd (the
    first instance at the first address, every later one at the second) and the console output at its key.
    Deleting is TerminateInstances.  ``create_fleet``: through the CreateFleet layer (subnets and instance types
    allowed), whose calls tests/support/fake_ec2_fleet.py counts."""
    import dataclasses

    import boto3

    from playbooks.providers import aws
    from playbooks.providers import cloud as cc
    from tests.test_aws import CONSOLE
    c = request.getfixturevalue("aws_fleet_ctx" if create_fleet else "aws_ctx")
    mp = request.getfixturevalue("monkeypatch")
    c.config.aws.user = getpass.getuser()
    c.config.aws.ssh_port = port
    c.config.aws.tunnel_port = free_port()
    seen: dict[str, str] = {}
    real_node = aws._node

    def node(c, inst):
        n = real_node(c, inst)
        host = seen.setdefault(n.id, ADDRESSES[0] if not seen else ADDRESSES[1])
        return dataclasses.replace(n, host=host, port=port)

    mp.setattr(aws, "_node", node)
    console = CONSOLE.replace(CONSOLE.splitlines()[3].split()[1], host_key.split()[1])
    mp.setattr(aws, "host_keys", lambda client, iid: cc.parse_console_host_keys(console))
    ec2 = boto3.client("ec2", region_name="us-east-1")

    def delete(name):
        ids = [n.id for n in aws.list_nodes(c, FLEET) if n.name == name]
        ec2.terminate_instances(InstanceIds=ids)

    if create_fleet:
        fake = request.getfixturevalue("ec2_fleet")

        def calls():
            assert fake.calls["RunInstances"] == 0
            return fake.calls["CreateFleet"]

        def last_count():
            return int(fake.fleets[-1]["TargetCapacitySpecification"]["TotalTargetCapacity"])
    else:
        def calls():                        # one RunInstances call is one reservation
            return len(ec2.describe_instances()["Reservations"])

        def last_count():
            reservations = sorted(ec2.describe_instances()["Reservations"],
                                  key=lambda r: max(i["LaunchTime"] for i in r["Instances"]))
            return len(reservations[-1]["Instances"])

    return c, "aws", lambda _first: None, delete, calls, last_count


CLOUDS = {"gcp": _gcp_cloud, "aws": _aws_cloud,
          "aws-create-fleet": lambda request, port, key: _aws_cloud(request, port, key, create_fleet=True)}


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_a_deleted_instance_is_replaced_by_one_more_bulk_call_and_the_run_finishes(
        request, cloud, two_address_sshd, head_root, metadata, tmp_path):
    port, host_key, home = two_address_sshd
    c, provider, moved, delete, bulk_calls, last_count = CLOUDS[cloud](request, port, host_key)
    c.config.shared.root = str(head_root)
    c.config.shared.mountpoint = str(tmp_path / "mnt")
    c.config.local.base_address = "127.0.9.20"
    c.config.local.head_port = free_port()
    c.config.fleet.ready_timeout = 30.0
    c.config.fleet.ssh_timeout = 30.0
    c.config.job.poll = 0.5
    c.config.job.lost_after = 20.0
    c.config.job.item_delay = 0.03
    c.config.job.metadata_url = metadata.endpoint
    count = make_samples(head_root / "src", 120, size=(160, 120))
    record = None
    fleet.create(c, n=1, name=FLEET, provider=provider, ttl=1.0)
    try:
        first = fleet.nodes_or_exit(c, FLEET, provider)[1]
        assert len(first) == 1 and first[0].host == ADDRESSES[0]
        moved(first[0])
        mount.mount(c, name=FLEET, provider=provider)
        deploy.deploy(c, name=FLEET, provider=provider)
        record = run.start(c, FLEET, first, "resize", "src", "out", "--size 48", provider=provider)
        deadline = time.monotonic() + 60
        while len(outputs(c)) < 10:
            assert time.monotonic() < deadline, "the first node made no outputs"
            time.sleep(0.1)
        # the VM vanishes: deleted in the cloud, and what ran on it dies with it
        delete(first[0].name)
        _kill_machine(c, first[0].name, c.config.shared.mountpoint, record)
        calls_before = bulk_calls()
        report = {}
        t = threading.Thread(target=lambda: report.update(supervise.supervise(c, record, max_replacements=2)))
        t.start()
        t.join(240)
        assert not t.is_alive(), "the supervisor did not finish"
        assert bulk_calls() == calls_before + 1 and last_count() == 1      # one more bulk call, for one node
        assert report["done"] == count and report["failed"] == 0, report
        assert (report["nodes_lost"], report["nodes_preempted"], report["nodes_replaced"]) == (1, 0, 1), report
        check_resized(c, "out", 48)                                           # every output, whole and valid
        known = (fleet_dir(c, FLEET) / "known_hosts").read_text()
        assert f"[{ADDRESSES[1]}]:{port} " in known                        # pinned from the cloud's word
        assert progress.snapshot(c, record)["done"] == count
    finally:
        for e in (record or {}).get("nodes", []):
            _kill_machine(c, e["name"], c.config.shared.mountpoint, record)
        if record is None:                  # a mount or a deploy that failed: no sshfs is left behind either
            _unmount(c.config.shared.mountpoint)
        fleet.down(c, name=FLEET, provider=provider)
