"""data.push / data.pull with the shared root on a head instance (GCE fake, moto) and real loopback sshds, and
the rule that a head instance never takes the results with it (playbooks/runs/keep.py).

The head instance is the sshd of ``test_gcp_head_instance`` (127.0.0.2, SFTP-only user chrooted into a
root-owned folder whose ``data/`` is the shared root); the node is ``fleet_sshd``.  Needs root, sshfs, FUSE.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from tests.support.cloud import FLEET
from playbooks import data, fleet
from playbooks.runs import keep
from playbooks.settings.defaults import REPO
from playbooks.providers import FleetSpec, aws, gcp
from playbooks.providers import cloud as cc
from playbooks.runs import head_instance as hi
from test_gcp_head_instance import (HEAD_ADDR, head_instance_sshd, point_at_head, pytestmark,  # noqa: F401
                                    sftp_user)
from tests.support.transfer import make_tree, same_tree


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def on_head(c, gce, fleet_sshd, head_sshd, tmp_path, monkeypatch):
    """A GCP fleet of one node with a head instance on the fake; returns the head's shared root on disk."""
    point_at_head(c, gce, fleet_sshd, head_sshd, tmp_path, monkeypatch)
    gcp.create(c, FleetSpec(name=FLEET, count=1, head="instance"))
    gcp.wait_ready(c, FLEET, 20)
    return head_sshd[0] / cc.HEAD_DATA


def push_and_run(c, provider: str, tmp_path, images: int) -> None:
    """create -> push (the inputs from a local folder) -> run (resize on the node, writing to the head)."""
    from playbooks import deploy, mount, run
    from playbooks.runs.samples import make_samples
    make_samples(tmp_path / "images", images, size=(96, 64))
    data.push(c, from_=str(tmp_path / "images"), to="src")
    try:
        mount.mount(c, name=FLEET, provider=provider)
        deploy.deploy(c, name=FLEET, provider=provider)
        run.run_(c, workload="resize", src="src", dst="out", args="--size 32", name=FLEET, provider=provider,
                 wait=True)
    finally:
        mount.unmount(c, name=FLEET, provider=provider)


def _env(c) -> dict:
    g = c.config.gcp
    return {**os.environ, "INVOKE_FLEET_PROVIDER": "gcp", "INVOKE_FLEET_NAME": FLEET,
            "INVOKE_FLEET_STATE_DIR": str(c.config.fleet.state_dir), "INVOKE_FLEET_SSH_TIMEOUT": "5",
            "INVOKE_GCP_ENDPOINT": g.endpoint, "INVOKE_GCP_PROJECT": g.project, "INVOKE_GCP_ZONE": g.zone,
            "INVOKE_GCP_USER": g.user, "INVOKE_GCP_SSH_PORT": str(g.ssh_port),
            "INVOKE_SHARED_ROOT": str(c.config.shared.root)}


def _landed(folder: Path) -> dict[str, int]:
    """rel -> inode of the complete files below ``folder`` (temp files are not complete)."""
    return {p.relative_to(folder).as_posix(): p.stat().st_ino for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".fbpart-")}


def test_push_to_a_head_instance_killed_and_resumed_then_pulled(gcp_ctx, gce, fleet_sshd, head_instance_sshd,
                                                                counting_s3, tmp_path, monkeypatch, capsys):
    c = gcp_ctx
    shared = on_head(c, gce, fleet_sshd, head_instance_sshd, tmp_path, monkeypatch)
    made = make_tree(tmp_path / "in", 1000, 3)
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "data.push", "--from", str(tmp_path / "in"), "--to",
                             "inputs", "--threads", "2", "--json"], cwd=REPO, env=_env(c), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(_landed(shared / "inputs")) < 150 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)                   # SIGKILL mid-way
    proc.wait(10)
    proc.stdout.close()
    proc.stderr.close()
    before = _landed(shared / "inputs")
    assert 0 < len(before) < 1003
    assert all((shared / "inputs" / rel).read_bytes() == made[rel] for rel in before)   # nothing half-written
    data.push(c, from_=str(tmp_path / "in"), to="inputs", json_=True)
    out = last_json(capsys)
    assert (out["copied"], out["skipped"]) == (1003 - len(before), len(before))
    after = _landed(shared / "inputs")
    assert all(after[rel] == ino for rel, ino in before.items())   # not one complete file was written again
    assert same_tree(shared / "inputs", made)                       # and no temp file is left
    # out of the head: to a local folder byte-identical, and to S3 twice (the 2nd skips by ETag, computed on the head)
    data.pull(c, from_="inputs", to=str(tmp_path / "back"), json_=True)
    assert last_json(capsys)["copied"] == 1003 and same_tree(tmp_path / "back", made)
    c.config.data.s3_endpoint = counting_s3.url
    data.pull(c, from_="inputs", to="s3://results/in", json_=True, threads=8)
    assert last_json(capsys)["copied"] == 1003 and len(counting_s3.requests("PUT")) == 1003
    counting_s3.clear()
    data.pull(c, from_="inputs", to="s3://results/in", json_=True)
    assert last_json(capsys)["skipped"] == 1003 and not counting_s3.requests("PUT")
    hi._REMOTE_HEADS.clear()


def test_create_push_run_down_keeps_the_outputs_until_pulled(gcp_ctx, gce, fleet_sshd, head_instance_sshd, tmp_path,
                                                             monkeypatch, capsys):
    from playbooks import teardown
    c = gcp_ctx
    shared = on_head(c, gce, fleet_sshd, head_instance_sshd, tmp_path, monkeypatch)
    push_and_run(c, "gcp", tmp_path, 6)
    outputs = _landed(shared / "out")
    assert len([r for r in outputs if r.endswith(".jpg")]) == 6
    capsys.readouterr()
    fleet.down(c, name=FLEET, provider="gcp", dry_run=True)            # the dry run says what data would go
    said = capsys.readouterr().out
    assert "would KEEP demo-head (100 GB disk: about $10/month stopped" in said and "out/" in said
    assert len(gce.instances) == 2
    with pytest.raises(Exit, match="kept the head instance demo-head.*never pulled.*data.pull"):
        fleet.down(c, name=FLEET, provider="gcp")                      # -> down: the nodes go, the head stays
    assert [name for _, name in gce.instances] == ["demo-head"]
    assert _landed(shared / "out") == outputs                          # every output still there, untouched
    with pytest.raises(Exit, match="kept the head instance"):
        teardown.teardown(c, name=FLEET, provider="gcp")               # the same rule for teardown
    hi._REMOTE_HEADS.clear()
    data.pull(c, from_="out", to=str(tmp_path / "results"))
    assert {r for r in _landed(tmp_path / "results")} == set(outputs)
    assert json.loads((shared / ".fleetbook" / "pulled.json").read_text())["out"]["files"] == len(outputs)
    capsys.readouterr()
    fleet.down(c, name=FLEET, provider="gcp", dry_run=True)
    assert "would DELETE demo-head" in capsys.readouterr().out
    fleet.down(c, name=FLEET, provider="gcp")                          # pulled since the run ended: it goes
    assert gce.instances == {}


def test_the_head_ttl_stops_it(gcp_ctx, aws_ctx):
    inst = gcp.head_instance(gcp_ctx, FLEET, 2.0, "projects/p/global/images/i")
    assert inst.scheduling.instance_termination_action == "STOP"
    key, group = "k", "sg-1"
    params = aws.head_params(aws_ctx, FLEET, 2.0, "ami-1", key, group, [])
    assert params["InstanceInitiatedShutdownBehavior"] == "stop"
    nodes = aws.run_params(aws_ctx, FLEET, 2, 2, True, 2.0, "ami-1", key, group)
    assert nodes["InstanceInitiatedShutdownBehavior"] == "terminate"   # nodes still delete themselves


def test_keep_rules():
    assert keep.covers("out", "out") and keep.covers("", "out/a") and keep.covers("out", "out/sub")
    assert not keep.covers("outs", "out") and not keep.covers("out/sub", "out")


def on_aws_head(c, fleet_sshd, head_sshd, tmp_path, monkeypatch):
    """The same on moto: its addresses are fictitious, so the node is pointed at ``fleet_sshd`` and the head
    (public and private address) at the head sshd, and the console output at their host keys."""
    import getpass
    port, node_key, _ = fleet_sshd
    chroot, head_key = head_sshd
    a = c.config.aws
    a.user, a.ssh_port = getpass.getuser(), port
    c.config.fleet.provider = "aws"
    c.config.fleet.name = FLEET
    c.config.shared.mountpoint = str(tmp_path / "mnt")
    c.config.shared.root = str(tmp_path / "not-the-head")
    c.config.job.poll = 0.3
    real_node, real_find = aws._node, aws.find_head
    monkeypatch.setattr(aws, "_node", lambda c, inst: dataclasses.replace(
        real_node(c, inst), host=HEAD_ADDR if cc.is_head(aws._tags(inst)) else "127.0.0.1", port=port,
        python=sys.executable, workdir=str(tmp_path / "node-work")))

    def find_head(c, name):
        found = real_find(c, name)
        return dataclasses.replace(found, private_ip=HEAD_ADDR) if found else None

    monkeypatch.setattr(aws, "find_head", find_head)

    def host_keys(client, iid):
        (inst,) = [i for r in client.describe_instances(InstanceIds=[iid])["Reservations"] for i in r["Instances"]]
        return [head_key] if cc.is_head(aws._tags(inst)) else [node_key]

    monkeypatch.setattr(aws, "host_keys", host_keys)
    monkeypatch.setattr(cc, "HEAD_CHROOT", str(chroot))
    monkeypatch.setattr(hi, "HEAD_PYTHON", sys.executable)
    monkeypatch.setattr(hi, "HEAD_WORKDIR", str(tmp_path / "head-work"))
    aws.create(c, FleetSpec(name=FLEET, count=1, head="instance"))
    aws.wait_ready(c, FLEET, 20)
    return chroot / cc.HEAD_DATA


def test_aws_down_loses_the_outputs_only_with_discard_results(aws_ctx, gcp_ctx, fleet_sshd, head_instance_sshd,
                                                              tmp_path, monkeypatch, capsys):
    c = aws_ctx
    shared = on_aws_head(c, fleet_sshd, head_instance_sshd, tmp_path, monkeypatch)
    push_and_run(c, "aws", tmp_path, 4)
    outputs = _landed(shared / "out")
    assert len([r for r in outputs if r.endswith(".jpg")]) == 4
    import boto3
    ec2 = boto3.client("ec2", region_name="us-east-1")

    def alive():
        return sorted(aws._tags(i).get("Name", "") for r in ec2.describe_instances(Filters=[
            {"Name": "instance-state-name", "Values": aws.LIVE}])["Reservations"] for i in r["Instances"])

    with pytest.raises(Exit, match="kept the head instance demo-head"):
        fleet.down(c, name=FLEET, provider="aws")                       # -> down: the node goes, the head stays
    assert alive() == ["demo-head"] and _landed(shared / "out") == outputs
    with pytest.raises(Exit, match="kept the head instance"):
        fleet.down(c, name=FLEET, provider="aws")                       # and again: still kept
    capsys.readouterr()
    fleet.down(c, name=FLEET, provider="aws", dry_run=True, discard_results=True)
    assert "would DELETE demo-head and the shared root on its disk" in capsys.readouterr().out
    assert alive() == ["demo-head"]
    fleet.down(c, name=FLEET, provider="aws", discard_results=True)     # the one way to lose them
    assert alive() == []
    hi._REMOTE_HEADS.clear()
