"""End to end with a head instance (gcp.head = instance) on the GCE fake: real sshds, real sshfs, real workloads.

The fake hands the node the loopback address of ``fleet_sshd`` (the node) and the head instance 127.0.0.2, where
this test runs a second real sshd configured like a head instance (``cloud_common.head_match_block``: the user
``fleetsftp``, SFTP only, chrooted as root into a root-owned folder whose ``data/`` is the shared root).  Nodes
mount the head's "internal" address with their key; ``invoke run`` writes outputs there and ``progress`` counts
them on the head over SSH.  Needs root (chroot, a Unix user), sshfs and FUSE.
"""
from __future__ import annotations

import dataclasses
import getpass
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cloud import FLEET, SSHD
from playbooks.providers import FleetSpec, gcp
from playbooks.providers import cloud as cc
from playbooks.runs import head_instance as hi

HEAD_ADDR = "127.0.0.2"
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="a head instance's chroot and user need root"),
              pytest.mark.skipif(not shutil.which("sshfs") or not Path("/dev/fuse").exists(), reason="no sshfs")]


@pytest.fixture
def sftp_user():
    """The head instance's SFTP-only user, made as the head's startup script makes it (removed afterwards)."""
    try:
        pwd.getpwnam(cc.HEAD_SFTP_USER)
        made = False
    except KeyError:
        subprocess.run(["useradd", "--system", "-M", "-p", "*", "-s", "/usr/sbin/nologin", cc.HEAD_SFTP_USER],
                       check=True)
        made = True
    yield cc.HEAD_SFTP_USER
    if made:
        subprocess.run(["userdel", cc.HEAD_SFTP_USER], check=False)


@pytest.fixture
def head_instance_sshd(gcp_ctx, fleet_sshd, head_root, sftp_user, tmp_path):
    """A real sshd on 127.0.0.2:<the nodes' port>, configured like a head instance; yields (chroot, host key)."""
    from playbooks.ssh.ports import banner
    from playbooks.ssh.sshd import sshd_config
    port = fleet_sshd[0]
    d = tmp_path / "head-sshd"
    (d / "home").mkdir(parents=True)
    chroot = head_root                       # root-owned, below root-owned folders: sshd chroots into it
    os.chmod(chroot, 0o755)
    data = chroot / cc.HEAD_DATA
    data.mkdir()
    shutil.chown(data, sftp_user, sftp_user)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_ed25519")], check=True)
    (d / "operator_keys").write_text(cc.public_key(gcp_ctx, FLEET) + "\n")        # the fleet's own key, as GCE does
    # sshd reads it as the SFTP user: not below /tmp/pytest-of-root (0700), as /etc/fleetbook on a head instance
    keys = chroot.with_name(chroot.name + ".authorized_keys")
    keys.write_text(cc.head_authorized_keys(gcp_ctx, FLEET))
    keys.chmod(0o644)
    cfg = d / "sshd_config"
    cfg.write_text(sshd_config(
        listen=HEAD_ADDR, port=port, host_key=d / "host_ed25519", pid_file=d / "sshd.pid",
        authorized=d / "operator_keys", user=f"{getpass.getuser()} {sftp_user}",
        extra=[f"SetEnv HOME={d / 'home'}", "Subsystem sftp internal-sftp",
               *cc.head_match_block(sftp_user, str(chroot), str(keys))]))
    check = subprocess.run([SSHD, "-t", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    log = open(d / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)
    for _ in range(100):
        if banner(HEAD_ADDR, port, 0.5):
            break
        time.sleep(0.05)
    yield chroot, " ".join((d / "host_ed25519.pub").read_text().split()[:2])
    proc.terminate()
    proc.wait(10)
    log.close()
    keys.unlink()


def point_at_head(c, gce, fleet_sshd, head_instance_sshd, tmp_path, monkeypatch) -> None:
    """Settings and fakes for a GCP fleet whose node is ``fleet_sshd`` and whose head instance is the head sshd."""
    port, node_key, _ = fleet_sshd
    chroot, head_key = head_instance_sshd
    gce.host_keys = [node_key]
    gce.addresses["demo-head"] = (HEAD_ADDR, HEAD_ADDR)          # public and internal address of the head
    gce.instance_host_keys["demo-head"] = [head_key]
    c.config.gcp.ssh_port = port
    c.config.fleet.provider = "gcp"
    c.config.fleet.name = FLEET
    c.config.shared.mountpoint = str(tmp_path / "mnt")
    c.config.shared.root = str(tmp_path / "not-the-head")         # nothing may land on the operator's disk
    c.config.job.poll = 0.3
    # the node is this machine: its interpreter is the venv's (PIL), its workdir absolute (not /root)
    real_node = gcp._node
    monkeypatch.setattr(gcp, "_node", lambda c, inst: dataclasses.replace(
        real_node(c, inst), python=sys.executable, workdir=str(tmp_path / "node-work")))
    monkeypatch.setattr(cc, "HEAD_CHROOT", str(chroot))
    monkeypatch.setattr(hi, "HEAD_PYTHON", sys.executable)
    monkeypatch.setattr(hi, "HEAD_WORKDIR", str(tmp_path / "head-work"))


def test_head_instance_end_to_end(gcp_ctx, gce, fleet_sshd, head_instance_sshd, tmp_path, monkeypatch, capsys):
    from playbooks import deploy, mount, progress, run
    from playbooks.runs import state as runstate
    from playbooks.runs.samples import make_samples
    port = fleet_sshd[0]
    chroot, head_key = head_instance_sshd
    c = gcp_ctx
    point_at_head(c, gce, fleet_sshd, head_instance_sshd, tmp_path, monkeypatch)
    make_samples(chroot / cc.HEAD_DATA / "src", 6, size=(96, 64))   # the inputs, uploaded to the head's disk
    gcp.create(c, FleetSpec(name=FLEET, count=1, head="instance"))
    assert [n.name for n in gcp.wait_ready(c, FLEET, 20)] == ["demo-0001"]
    known = (Path(c.config.fleet.state_dir) / FLEET / "known_hosts").read_text()
    assert f"[{HEAD_ADDR}]:{port} {head_key}" in known          # the head's key, pinned from the cloud
    head = gcp.head(c, FLEET)
    assert (head.host, head.port, head.user, head.remote_path) == (HEAD_ADDR, port, "fleetsftp", "/data")
    node_ssh = fleet_sshd[2].parent / "home" / ".ssh"
    assert f"[{HEAD_ADDR}]:{port} {head_key}" in (node_ssh / "known_hosts").read_text()
    node_key_file = node_ssh / "fleet_head"
    # the nodes' key logs in for SFTP only: no shell, no command
    shell = subprocess.run(["ssh", "-F", "/dev/null", "-i", str(node_key_file), "-o", "BatchMode=yes",
                            "-o", f"UserKnownHostsFile={node_ssh / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
                            "-p", str(port), f"fleetsftp@{HEAD_ADDR}", "id"], capture_output=True, text=True,
                           timeout=20)
    assert "uid=" not in shell.stdout and shell.returncode != 0
    assert "sftp connections only" in shell.stdout + shell.stderr, shell.stderr
    try:
        mount.mount(c, name=FLEET, provider="gcp")
        assert (tmp_path / "mnt" / "src").is_dir()              # the head's shared root, seen on the node
        deploy.deploy(c, name=FLEET, provider="gcp")
        run.run_(c, workload="resize", src="src", dst="out", args="--size 32", name=FLEET, provider="gcp",
                 wait=True)
        outputs = sorted(p.name for p in (chroot / cc.HEAD_DATA / "out").rglob("*.jpg"))
        assert len(outputs) == 6                               # on the head instance's disk
        record = runstate.load_run(c)                          # read back from the head over SFTP
        assert record["fleet"] == FLEET and (chroot / cc.HEAD_DATA / ".fleetbook" / "runs" / "LATEST").exists()
        assert not (tmp_path / "not-the-head").exists()
        capsys.readouterr()
        progress.progress(c, json_=True)
        snap = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (snap["total"], snap["done"], snap["failed"]) == (6, 6, 0)
        assert snap["nodes"][0]["state"] == "done"
        from playbooks import overhead                         # overhead reads the heartbeats there too
        beats = overhead.read_run_state(c, gcp.list_nodes(c, FLEET), "gcp", FLEET)
        assert beats and all(status == "done" for _, status in beats.values())
        assert sum(beat["done"] for beat, _ in beats.values()) >= 6  # every output was made by some node
    finally:
        mount.unmount(c, name=FLEET, provider="gcp")
        hi._REMOTE_HEADS.clear()
    assert gcp.terminate(c, FLEET) == 2 and gce.instances == {}


def test_head_instance_files_are_never_reached_through_a_link(gcp_ctx, fleet_sshd, head_instance_sshd, tmp_path,
                                                             monkeypatch):
    """What the operator writes on a head instance over SFTP (run state, outputs' folders) and counts there over
    SSH is checked with lstat for links a node may have planted below the shared root."""
    from playbooks.providers import Node
    from playbooks.fs.safefs import Refused
    port = fleet_sshd[0]
    chroot, head_key = head_instance_sshd
    monkeypatch.setattr(cc, "HEAD_CHROOT", str(chroot))
    monkeypatch.setattr(hi, "HEAD_PYTHON", sys.executable)
    monkeypatch.setattr(hi, "HEAD_WORKDIR", str(tmp_path / "head-work"))
    with open(Path(gcp_ctx.config.fleet.state_dir) / FLEET / "known_hosts", "a") as kh:
        kh.write(f"[{HEAD_ADDR}]:{port} {head_key}\n")
    data = chroot / cc.HEAD_DATA
    elsewhere = data / "someone-elses"                       # a folder of the shared root the link leads to
    (elsewhere / "out").mkdir(parents=True)
    (elsewhere / "LATEST").write_text("keep\n")
    (data / ".fleetbook").mkdir()
    (data / ".fleetbook" / "runs").symlink_to("/" + cc.HEAD_DATA + "/someone-elses")   # as a node makes it
    (data / "src").mkdir()
    (data / "out").symlink_to("/" + cc.HEAD_DATA + "/someone-elses/out")
    head = hi.RemoteHead(gcp_ctx, FLEET, Node(name="demo-head", host=HEAD_ADDR, port=port, user=getpass.getuser()))

    def as_the_sftp_user():                                   # what a node makes is the SFTP user's
        for p in data.rglob("*"):
            os.lchown(p, pwd.getpwnam(cc.HEAD_SFTP_USER).pw_uid, pwd.getpwnam(cc.HEAD_SFTP_USER).pw_gid)

    as_the_sftp_user()
    try:
        for call in (lambda: head.write_text(".fleetbook/runs/LATEST", "evil\n"),
                     lambda: head.mkdirs(".fleetbook/runs/r1/nodes/n"), lambda: head.mkdirs("out/sub"),
                     lambda: head.read_text(".fleetbook/runs/LATEST"), lambda: head.is_dir("out")):
            with pytest.raises(Refused) as exc:
                call()
            assert "is a symlink" in exc.value.message and "\n" not in exc.value.message
        record = {"run_id": "resize-1", "workload": "resize", "src": "src", "dst": "out", "args": "",
                  "nodes": [{"name": "demo-0001"}]}
        with pytest.raises(Refused):                        # the count on the head refuses to look through it
            head.snapshot_data(record)
        assert (elsewhere / "LATEST").read_text() == "keep\n" and list((elsewhere / "out").iterdir()) == []
        (data / ".fleetbook" / "runs").unlink()
        (data / ".fleetbook" / "runs").mkdir()
        (data / ".fleetbook" / "runs" / "LATEST").symlink_to("/" + cc.HEAD_DATA + "/someone-elses/LATEST")
        as_the_sftp_user()
        head.write_text(".fleetbook/runs/LATEST", "resize-1\n")    # a link at the name itself: replaced
        assert not (data / ".fleetbook" / "runs" / "LATEST").is_symlink()
        assert head.read_text(".fleetbook/runs/LATEST") == "resize-1\n"
        assert (elsewhere / "LATEST").read_text() == "keep\n"
    finally:
        head.close()
