"""A checkout wherever a newcomer clones it, a folder whose path holds a space too ("~/My Projects/fleetbook"): every
path that goes into an OpenSSH config line (the head's and the nodes' sshd_config, ``ssh -o``, the options sshfs
hands to ssh) is one word of OpenSSH's syntax, and a daemon whose config path has a space is still known as ours. On
the landed code ``./setup.sh`` from such a folder ended at step 2 with "sshd rejected .../sshd_config: terminating,
2 bad configuration options" (and, once sshd took it, "the head sshd did not start ... see .../sshd.log", a log the
failed create had removed)."""
from __future__ import annotations

import secrets
import shlex
import subprocess
import types

import pytest
from tests.support.fleet import check_resized, make_ctx

from playbooks import deploy, fleet, mount, progress, run, teardown
from playbooks.providers import local
from playbooks.runs.samples import make_samples
from playbooks.ssh import sftp_head, sshd
from playbooks.ssh.keys import keypair

NAME = "spc" + secrets.token_hex(2)


def test_config_word_quotes_only_what_needs_it():
    assert sshd.config_word("/srv/fleetbook/key") == "/srv/fleetbook/key"
    assert sshd.config_word("/home/a/My Projects/key") == '"/home/a/My Projects/key"'
    assert sshd.config_word('/odd "quoted" \\ path') == '"/odd \\"quoted\\" \\\\ path"'


def test_sshd_accepts_a_config_whose_every_path_has_a_space(tmp_path):
    folder = tmp_path / "My Projects" / "head"
    folder.mkdir(parents=True)
    keypair(folder / "ssh_host_ed25519_key", "test")
    (folder / "authorized_keys").write_text("")
    cfg = folder / "sshd_config"
    start_dir = sshd.config_word(tmp_path / "My Projects")
    cfg.write_text(sshd.sshd_config(listen="127.0.0.1", port=2, host_key=folder / "ssh_host_ed25519_key",
                                    pid_file=folder / "sshd.pid", authorized=folder / "authorized_keys",
                                    user="nobody", extra=[f"ForceCommand internal-sftp -d {start_dir}"]))
    check = subprocess.run([sshd.SSHD, "-T", "-f", str(cfg), "-C", "user=nobody,host=h,addr=127.0.0.1"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    said = dict(line.split(" ", 1) for line in check.stdout.splitlines() if " " in line)
    assert said["hostkey"] == str(folder / "ssh_host_ed25519_key")      # one path, not three words
    assert said["authorizedkeysfile"] == str(folder / "authorized_keys")
    assert said["forcecommand"] == f'internal-sftp -d "{tmp_path / "My Projects"}"'


@pytest.mark.parametrize("home", ["/home/a/My Projects/n0", None])
def test_the_key_options_sshfs_hands_to_ssh_are_one_path_each(home):
    node = types.SimpleNamespace(labels={"home": home} if home else {})
    words = subprocess.run(["bash", "-c", 'HOME="/home/b c"; printf "%s\\n" ' +
                            mount.home_file_option(node, "IdentityFile", ".ssh/fleet_head")],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert words == ["-o", f'IdentityFile="{home or "/home/b c"}/.ssh/fleet_head"']
    # and ssh reads that as one path (ssh -G prints the configuration it would use)
    seen = subprocess.run(["ssh", "-F", "/dev/null", "-G", *words, "h"], capture_output=True, text=True, check=True)
    assert f"identityfile {home or '/home/b c'}/.ssh/fleet_head" in seen.stdout.splitlines()


@pytest.mark.fleet
@pytest.mark.timeout(300)
def test_a_fleet_whose_folders_have_a_space_runs_end_to_end(tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet") / "My Projects"
    c = make_ctx(base)
    make_samples(base / "data" / "src", 12, size=(160, 120))
    try:
        fleet.create(c, n=2, name=NAME)                # the head's and the nodes' sshd, known as ours
        mount.mount(c, name=NAME)                      # sshfs with the node's key and known_hosts
        deploy.deploy(c, name=NAME)
        nodes = local.list_nodes(c, NAME)
        assert " " in str(base) and all(n.state == "running" for n in nodes)
        record = run.start(c, NAME, nodes, "resize", "src", "out", "--size 48")
        snap = progress.wait_until_finished(c, record)
        assert snap["done"] == 12 and snap["failed"] == 0
        check_resized(c, size=48)
        # the system ssh client to a node, as `invoke shell` and the SSH looks at a lost node use it
        from playbooks.ssh.fanout import openssh_argv
        out = subprocess.run(openssh_argv(c, NAME, nodes[0], "-o", "LogLevel=ERROR") + ["echo", "hi"],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "hi", out.stderr + " " + shlex.join(openssh_argv(c, NAME, nodes[0]))
    finally:
        teardown.teardown(c, name=NAME)


def test_a_head_sshd_that_does_not_start_is_named_with_its_last_words(tmp_path):
    """The failed create removes the fleet's folder, the daemon's log with it: the error carries its last line."""
    assert sftp_head._said(tmp_path) == "it logged nothing"
    (tmp_path / "sshd.log").write_text("Server listening\n"
                                       "Bind to port 2299 on 127.0.1.9 failed: Address already in use.\n")
    assert sftp_head._said(tmp_path) == "it said: Bind to port 2299 on 127.0.1.9 failed: Address already in use."
