"""The nodes' sshfs mount options (playbooks/mount.py, issue 15) keep the view fresh: what the head deletes,
re-creates or rewrites is seen by a node at once, never a cached old listing or old bytes."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import psutil
import pytest
from tests.support.fleet import bring_up, make_ctx

from playbooks import mount, teardown
from playbooks.providers import local
from playbooks.ssh.fanout import connect, q, run_checked

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(300)]
NAME = "view" + secrets.token_hex(2)


@pytest.fixture(scope="module")
def up(fleet_base):
    c = make_ctx(fleet_base)
    (fleet_base / "data" / "src").mkdir(parents=True, exist_ok=True)
    try:
        yield bring_up(c, NAME, n=1)
    finally:
        teardown.teardown(c, name=NAME)


def on_node(c, script: str) -> str:
    node = local.list_nodes(c, NAME)[0]
    conn = connect(c, NAME, node)
    try:
        return run_checked(conn, f"cd {q(node.mountpoint)} && {script}").strip()
    finally:
        conn.close()


def test_a_folder_the_head_deletes_and_makes_again_is_seen_fresh(up):
    root = up.config.shared.root
    folder = f"{root}/view"
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(f"{folder}/sub")
    for name in ("a.txt", "sub/old.txt"):
        with open(f"{folder}/{name}", "w") as f:
            f.write("first\n")
    # the node looks at everything (listing, attributes, contents) so that any cache would hold it
    assert on_node(up, "ls view; cat view/a.txt; stat -c %s view/a.txt; ls view/sub") == "a.txt\nsub\nfirst\n6\nold.txt"
    shutil.rmtree(folder)
    os.makedirs(f"{folder}/sub")
    with open(f"{folder}/a.txt", "w") as f:
        f.write("second, longer\n")
    with open(f"{folder}/sub/new.txt", "w") as f:
        f.write("n")
    # at once, no sleep: the new listing, the new size and the new bytes
    assert on_node(up, "ls view; cat view/a.txt; stat -c %s view/a.txt; ls view/sub; "
                       "test -e view/sub/old.txt && echo STALE || echo gone") == \
        "a.txt\nsub\nsecond, longer\n15\nnew.txt\ngone"
    # rewritten in place with the same size: the node reads the new bytes (no kernel page cache of the old)
    with open(f"{folder}/a.txt", "w") as f:
        f.write("SECOND, LONGER\n")
    assert on_node(up, "cat view/a.txt") == "SECOND, LONGER"
    # a file the head removes is gone for the node at once, and one it makes is there
    os.unlink(f"{folder}/sub/new.txt")
    with open(f"{folder}/sub/newer.txt", "w") as f:
        f.write("x")
    assert on_node(up, "ls view/sub; test -e view/sub/new.txt && echo STALE || echo gone") == "newer.txt\ngone"



def test_the_mount_keeps_no_cache_that_could_go_stale():
    """No dir_cache and the kernel's 1 s default timeouts (no kernel_cache); 128 KiB per SFTP read and write."""
    from playbooks import mount
    from playbooks.providers.types import Node
    from playbooks.ssh.sftp_head import Head

    cmd = mount.mount_command(Node(name="n", host="h", labels={"home": "/h"}), Head("127.0.0.1", 2299, "u", "/d"))
    assert "dir_cache=no" in cmd and "max_read=131072" in cmd and "max_write=131072" in cmd
    opts = cmd.split("sshfs -o ", 1)[1].split(" ", 1)[0]       # the mount's options (the repair uses `timeout`)
    assert "timeout" not in opts and "kernel_cache" not in opts and "dir_cache=no" in opts
    ciphers = "Ciphers=aes128-gcm@openssh.com\\,aes256-gcm@openssh.com\\,chacha20-poly1305@openssh.com"
    assert ciphers in opts and "Compression=no" in opts    # a comma inside a value is escaped for sshfs


def test_the_link_to_the_head_is_aes_gcm_and_aead_only(up):
    """A node's ssh to the head (the mount's own options) gets AES-GCM without compression, and the head refuses a
    client offering no AEAD cipher (aes128-ctr is in OpenSSH's defaults, not in the head's list)."""
    node = local.list_nodes(up, NAME)[0]
    head = mount.head_for(up, NAME, "")
    home = node.labels["home"]
    opts = [*mount.ssh_options(head), f"IdentityFile={home}/.ssh/fleet_head",
            f"UserKnownHostsFile={home}/.ssh/known_hosts"]

    def ssh(*first: str) -> subprocess.CompletedProcess:
        argv = ["ssh", "-v", "-F", "/dev/null", *(w for o in [*first, *opts] for w in ("-o", o)), "-s",
                f"{head.user}@{head.host}", "sftp"]
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)

    ok = ssh()
    assert "kex: client->server cipher: aes128-gcm@openssh.com MAC: <implicit> compression: none" in ok.stderr, \
        ok.stderr[-800:]
    assert "Authenticated to" in ok.stderr
    weak = ssh("Ciphers=aes128-ctr")
    assert weak.returncode != 0 and "no matching cipher found" in weak.stderr, weak.stderr[-800:]
    # and the live mount's ssh was started with the list (sshfs passed it on, unsplit)
    assert "Compression=no" in mount.mount_command(node, head)
    lines = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["name", "cmdline"])
             if p.info["name"] == "ssh"]
    assert any(f"Port={head.port}" in line and "-oCiphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,"
               "chacha20-poly1305@openssh.com" in line for line in lines), lines
