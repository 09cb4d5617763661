"""The head's own SFTP-only sshd, through which the nodes reach the shared disk.

The nodes' key (``node_ed25519``) is authorized with ``restrict`` and the daemon forces ``internal-sftp``:
that key can do SFTP and nothing else.  As root the session is also chrooted: sshd chroots only into a path
whose every folder is root's and writable by no one else, which a shared root below /tmp or a home folder is
not.  So the daemon runs in a mount namespace of its own in which the shared root is bind-mounted at
``<chroot>/data``, the chroot being a root-owned folder below ``local.public_dir``; the bind mount exists only
for that daemon and vanishes with it, so teardown leaves no mount behind and nothing else sees it.  Without
root the daemon starts the SFTP session in the shared root instead.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from invoke.exceptions import Exit

from playbooks.ssh import daemons as procs
from playbooks.fs import safefs
from playbooks.fs.public import public_folder
from playbooks.settings.defaults import REPO, fleet_dir, public_dir, public_fleet_dir, shared_root, state_dir
from playbooks.ssh.keys import ensure_fleet
from playbooks.ssh.sshd import AEAD_CIPHERS, config_word, sshd_alive, sshd_config, start_sshd


@dataclass(frozen=True)
class Head:
    host: str
    port: int
    user: str
    remote_path: str  # what a node mounts: "/data" inside the chroot, else the shared root itself


class HeadError(Exit):
    """The head's sshd cannot serve the shared root (typed; an ``Exit`` until the steps convert typed errors at
    their boundary: ``settings.errors.user_errors``)."""


class AddressTaken(HeadError):
    """The head's sshd could not listen on its address (another program took it first)."""


DATA = "data"  # the shared root inside the chroot
SFTP_USER = "fbsftp"  # as root, the nodes' SFTP login on this machine: a system user of its own, never root


def sftp_user() -> pwd.struct_passwd:
    """The unprivileged user the nodes' SFTP sessions run as (made once, kept: one for every fleet here), so
    that what a node writes is owned by it and never mistaken for the operator's files."""
    try:
        return pwd.getpwnam(SFTP_USER)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                               "--shell", "/usr/sbin/nologin", "--user-group", "--password", "*", SFTP_USER],
                              capture_output=True, text=True)
        if made.returncode != 0 and "already exists" not in made.stderr:
            raise HeadError(f"cannot make the SFTP user {SFTP_USER}: {made.stderr.strip()}")
        return pwd.getpwnam(SFTP_USER)


def serve_root(root: Path) -> None:
    """As root: the shared root is root's, readable by the SFTP user's group only (0750): the nodes read all of
    it and write only where ``give_to_nodes`` lets them; the node users of this machine cannot enter it."""
    if os.geteuid() == 0:
        os.chown(root, 0, sftp_user().pw_gid, follow_symlinks=False)
        os.chmod(root, 0o750)


def give_to_nodes(c, rel: str, *, tree: bool = False) -> None:
    """Let the nodes write in the folder ``rel`` of the shared root (a run's output folder, a node's state
    folder): as root it becomes the SFTP user's (with ``tree``, every folder below it too, for outputs of
    earlier runs).  Folders only, never through a symbolic link; without root a no-op (nodes log in as you)."""
    if os.geteuid() != 0:
        return
    user = sftp_user()
    safefs.Root(shared_root(c)).chown(rel, user.pw_uid, user.pw_gid, tree=tree)


def chroot_dir(c, fleet: str) -> Path:
    return public_fleet_dir(c, fleet) / "head-root"


def servable(c) -> Path:
    """The shared root, made if missing, or a one-line error when this machine cannot serve it to nodes.
    Called before a fleet is created, so that nothing is started for a shared root that cannot work."""
    root = shared_root(c)
    if root.exists() and not root.is_dir():
        raise HeadError(f"shared.root {root} is not a folder: choose another (INVOKE_SHARED_ROOT)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HeadError(f"shared.root {root} cannot be made ({exc.strerror}): choose another (INVOKE_SHARED_ROOT)")
    if root == Path("/") or any(p == root or p.is_relative_to(root) for p in (state_dir(c), REPO, public_dir(c))):
        raise HeadError(f"shared.root {root} holds the fleet's keys or the checkout, which nodes must never read: "
                   "choose a folder of its own, e.g. INVOKE_SHARED_ROOT=data (the default)")
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        raise HeadError(f"shared.root {root} is not writable by you: choose another (INVOKE_SHARED_ROOT)")
    if os.geteuid() == 0 and not shutil.which("unshare"):
        raise HeadError("unshare is missing (the head's sshd serves the shared root in a mount namespace of its own): "
                   "apt-get install util-linux")
    return root


def _config(c, fleet: str, root: Path) -> tuple[Path, Head, list[str]]:
    fdir = fleet_dir(c, fleet)
    hdir = fdir / "head"
    if not (hdir / "head.json").exists():      # the address is the provider's choice (local.ensure_head_address)
        raise HeadError(f"fleet {fleet} has no head address yet: create it first (`invoke fleet.create --name {fleet}`)")
    addr = json.loads((hdir / "head.json").read_text())
    user = pwd.getpwuid(os.geteuid()).pw_name
    authorized = hdir / "authorized_keys"
    wrapper: list[str] = []
    if os.geteuid() == 0:
        user = sftp_user().pw_name
        chroot = public_folder(c, chroot_dir(c, fleet), 0o755)
        (chroot / DATA).mkdir(mode=0o755, exist_ok=True)
        # sshd reads the authorized keys as the SFTP user: they sit beside the chroot, root's, 0644
        authorized = public_folder(c, chroot_dir(c, fleet).with_name("head-keys")) / "authorized_keys"
        extra = ["PermitRootLogin no", f"ChrootDirectory {config_word(chroot)}",
                 f"ForceCommand internal-sftp -d /{DATA}"]
        head = Head(addr["host"], addr["port"], user, f"/{DATA}")
        # the bind mount lives in the daemon's own mount namespace only, and dies with it
        wrapper = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                   'mount --bind -- "$1" "$2" && shift 2 && exec "$@"', "sh", str(root), str(chroot / DATA)]
    else:
        extra = [f"ForceCommand internal-sftp -d {config_word(root)}"]
        head = Head(addr["host"], addr["port"], user, str(root))
    node_pub = (fdir / "node_ed25519.pub").read_text().strip()
    authorized.write_text(f"restrict {node_pub}\n")
    os.chmod(authorized, 0o644)
    cfg = hdir / "sshd_config"
    cfg.write_text(sshd_config(
        listen=head.host, port=head.port, host_key=hdir / "ssh_host_ed25519_key", pid_file=hdir / "sshd.pid",
        authorized=authorized, user=user,
        extra=extra + ["AllowTcpForwarding no", "AllowAgentForwarding no", "Subsystem sftp internal-sftp",
                       f"Ciphers {AEAD_CIPHERS}", "Compression no"]))
    return cfg, head, wrapper


def start(c, fleet: str) -> Head:
    """Start (or keep) the fleet's head sshd at the address its provider chose (``head/head.json``: the local
    provider's ``ensure_head_address``); return where nodes reach it."""
    root = servable(c)
    serve_root(root)
    ensure_fleet(c, fleet)
    cfg, head, wrapper = _config(c, fleet, root)
    hdir = cfg.parent
    if sshd_alive(procs.read_pid(hdir / "sshd.pid"), cfg) is None:
        pid = start_sshd(cfg, hdir / "sshd.log", wrapper)
        for _ in range(200):  # until our own daemon listens: an answer from another program does not count
            proc = sshd_alive(pid, cfg)
            if proc is None:
                raise AddressTaken(f"the head sshd did not start on {head.host}:{head.port} ({_said(hdir)}; is the "
                                   f"address taken by another program?): `invoke fleet.down --name {fleet}` and "
                                   "create the fleet again")
            if _listens(proc, head.host, head.port):
                break
            time.sleep(0.05)
        else:
            raise HeadError(f"the head sshd did not start on {head.host}:{head.port}: {_said(hdir)}")
    return head


def _said(hdir: Path) -> str:
    """The last line the head's sshd logged, for an error (a failed create removes the fleet's folder, its log
    with it)."""
    try:
        lines = (hdir / "sshd.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return f"it said: {lines[-1]}" if lines else "it logged nothing"


def _listens(proc, host: str, port: int) -> bool:
    try:
        return any(conn.status == "LISTEN" and tuple(conn.laddr)[:2] == (host, port)
                   for conn in proc.net_connections(kind="tcp"))
    except psutil.Error:
        return False


def stop(c, fleet: str) -> None:
    hdir = fleet_dir(c, fleet) / "head"
    proc = sshd_alive(procs.read_pid(hdir / "sshd.pid"), hdir / "sshd_config")
    if proc is not None:
        procs.kill_all([proc])
    chroot = chroot_dir(c, fleet)
    (chroot.with_name("head-keys") / "authorized_keys").unlink(missing_ok=True)
    for empty in (chroot / DATA, chroot, chroot.with_name("head-keys")):  # rmdir, never rmtree: whatever might
        try:                                                               # be mounted here stays whole
            empty.rmdir()
        except OSError:
            pass


def sessions_cpu_s(c, fleet: str) -> float | None:
    """CPU seconds so far of the head sshd's live sessions (its descendants: one per mount, serving SFTP), i.e.
    what the shared disk has cost this machine; None when the fleet's head sshd does not run here."""
    hdir = fleet_dir(c, fleet) / "head"
    proc = sshd_alive(procs.read_pid(hdir / "sshd.pid"), hdir / "sshd_config")
    if proc is None:
        return None
    total = 0.0
    try:
        children = proc.children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        try:
            total += procs.cpu_seconds(child)
        except psutil.Error:
            continue
    return total
