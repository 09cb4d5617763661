"""Where a local fleet keeps things as root: the operator's keys stay private in the state folder (below a folder
closed to others, like a checkout in /root); what the node users must read lives in a root-owned folder below
``local.public_dir``; the head's sshd chroots into a root-owned folder with the shared root bind-mounted only in
its own mount namespace, so a shared root below /tmp works and no mount outlives the fleet."""
from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
from tests.support.fleet import make_ctx

from playbooks import fleet, mount, teardown
from playbooks.ssh import sftp_head as head
from playbooks.providers import local
from playbooks.ssh.fanout import fan_out, run_checked

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(300),
              pytest.mark.skipif(os.geteuid() != 0, reason="per-node users and the chroot exist only as root")]
NAME = "pth" + secrets.token_hex(2)


def can_read(user: str, path: Path) -> bool:
    return subprocess.run(["runuser", "-u", user, "--", "head", "-c1", str(path)], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def up(fleet_base):
    assert oct(Path("/tmp/pytest-of-root").stat().st_mode & 0o777) == "0o700"  # the state sits in a closed folder
    c = make_ctx(fleet_base)
    (fleet_base / "data" / "src").mkdir(parents=True)
    (fleet_base / "data" / "src" / "hello.txt").write_text("hi")
    fleet.create(c, n=2, name=NAME)
    mount.mount(c, name=NAME)
    yield c
    teardown.teardown(c, name=NAME)


def test_node_users_read_their_own_material_and_no_key_of_anyone_else(up):
    nodes = local.list_nodes(up, NAME)
    fdir = local.fleet_dir(up, NAME)
    for node in nodes:
        ndir = local.node_dir(up, NAME, node.name)
        assert ndir.is_relative_to(Path(up.config.local.public_dir)) and not ndir.is_relative_to(fdir)
        assert can_read(node.user, ndir / "authorized_keys")       # sshd reads it as the node's user
        assert can_read(node.user, Path(node.labels["home"]) / ".ssh" / "fleet_head")  # its own SFTP-only key
        for secret in (fdir / "id_ed25519", fdir / "node_ed25519", fdir / "head" / "ssh_host_ed25519_key",
                       ndir / "ssh_host_ed25519_key"):
            assert secret.exists() and not can_read(node.user, secret), secret
        others = [n for n in nodes if n is not node]
        for other in others:  # another node's home, key and host key are closed to this node
            assert not can_read(node.user, Path(other.labels["home"]) / ".ssh" / "fleet_head")
    # every private key a node user can open is its own SFTP-only key, nothing else
    for path in local.public_fleet_dir(up, NAME).rglob("*"):
        if path.is_file() and "PRIVATE KEY" in path.read_text(errors="ignore"):
            readers = [n.name for n in nodes if can_read(n.user, path)]
            own = [n.name for n in nodes if path == Path(n.labels["home"]) / ".ssh" / "fleet_head"]
            assert readers == own, (path, readers)


def test_the_head_serves_exactly_the_shared_root_and_no_mount_shows_outside_its_daemon(up):
    nodes = local.list_nodes(up, NAME)
    seen = fan_out(up, NAME, nodes, lambda conn, n: run_checked(conn, f"ls -A {n.mountpoint}; ls -A {n.mountpoint}/src"),
                   step="ls")
    root = Path(up.config.shared.root)
    for r in seen:
        assert r.ok, r.error
        assert r.value.split() == sorted(os.listdir(root)) + ["hello.txt"]  # the shared root, and only it
    chroot = head.chroot_dir(up, NAME)
    assert chroot.stat().st_uid == 0 and not chroot.stat().st_mode & 0o022
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(chroot) not in mounts  # the bind mount is the head daemon's alone


def test_teardown_removes_the_public_folders_and_leaves_no_mount(fleet_base):
    c = make_ctx(fleet_base)
    name = "pt" + secrets.token_hex(2)
    fleet.create(c, n=1, name=name)
    mount.mount(c, name=name)
    chroot = head.chroot_dir(c, name)
    assert chroot.is_dir()
    teardown.teardown(c, name=name)
    assert not local.public_fleet_dir(c, name).exists() and not local.fleet_dir(c, name).exists()
    assert str(chroot) not in Path("/proc/self/mountinfo").read_text()
    assert (fleet_base / "data").is_dir()  # the shared root itself is the user's: it stays


def node_sftp(c, node):
    """An SFTP session to the head exactly as a (possibly compromised) node has it: its own key, the head's
    pinned host key, the SFTP login it was given."""
    import json

    import paramiko
    home = Path(node.labels["home"])
    addr = json.loads((local.fleet_dir(c, NAME) / "head" / "head.json").read_text())
    client = paramiko.SSHClient()
    client.load_host_keys(str(home / ".ssh" / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(addr["host"], addr["port"], username=head.SFTP_USER, key_filename=str(home / ".ssh" / "fleet_head"),
                   look_for_keys=False, allow_agent=False, timeout=10)
    return client, client.open_sftp()


def test_nodes_log_in_unprivileged_and_write_only_where_they_are_given_a_folder(up):
    root = Path(up.config.shared.root)
    st = root.stat()
    assert (st.st_uid, oct(st.st_mode & 0o777)) == (0, "0o750") and st.st_gid == head.sftp_user().pw_gid
    node = local.list_nodes(up, NAME)[0]
    assert not can_read(node.user, root / "src" / "hello.txt")  # a node user of this machine: only via its mount
    (root / "state-of-the-operator").mkdir()
    (root / "given").mkdir()
    head.give_to_nodes(up, "given")
    client, sftp = node_sftp(up, node)
    try:
        with sftp.open("/data/given/out.txt", "w") as f:
            f.write("from a node")
        for denied in (lambda: sftp.open("/data/state-of-the-operator/x", "w"),
                       lambda: sftp.symlink("/etc", "/data/state-of-the-operator/link"),
                       lambda: sftp.open("/data/top-level-file", "w"),
                       lambda: sftp.rename("/data/src", "/data/src-moved")):
            with pytest.raises(PermissionError):
                denied()
        assert client.exec_command("id", timeout=10)[1].channel.recv_exit_status() != 0  # SFTP only
    finally:
        client.close()
    written = root / "given" / "out.txt"
    assert written.read_text() == "from a node" and written.stat().st_uid == head.sftp_user().pw_uid
    assert sorted(p.name for p in (root / "state-of-the-operator").iterdir()) == []
    assert {p.name for p in root.iterdir()} == {"src", "given", "state-of-the-operator"}


def test_a_changed_head_host_key_is_named_by_mount(up):
    node = local.list_nodes(up, NAME)[0]
    known = Path(node.labels["home"]) / ".ssh" / "known_hosts"
    saved = known.read_text()
    other = (local.node_dir(up, NAME, node.name) / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    entry = saved.split()[0]
    try:
        mount.unmount(up, name=NAME)
        known.write_text(f"{entry} {' '.join(other)}\n")   # the head "was rebuilt": another key answers
        [result] = mount.mount_all(up, NAME, [node])
        assert not result.ok and "does not match the node's known_hosts" in result.error, result.error
    finally:
        known.write_text(saved)
        mount.mount(up, name=NAME)
