"""The head's own SFTP-only sshd, through which the nodes reach the shared disk.

The nodes' key (``node_ed25519``) is authorized with ``restrict`` and the daemon forces ``internal-sftp``:
that key can do SFTP and nothing else.  As root the session is also chrooted at ``shared.root``, so a node
sees nothing of the head outside the shared disk; without root it starts in the shared root instead.
"""
from __future__ import annotations

import json
import os
import pwd
import time
from dataclasses import dataclass
from pathlib import Path

from invoke.exceptions import Exit

from . import procs
from .config import shared_root
from .providers import local


@dataclass(frozen=True)
class Head:
    host: str
    port: int
    user: str
    remote_path: str  # what a node mounts: "/" inside the chroot, else the shared root itself


def _chroot_problem(root: Path) -> str | None:
    """sshd chroots only into a path whose every folder is root's and writable by no one else."""
    for folder in [root, *root.parents]:
        st = folder.stat()
        if st.st_uid != 0 or st.st_mode & 0o022:
            return str(folder)
    return None


def _config(c, fleet: str, root: Path) -> tuple[Path, Head]:
    fdir = local.fleet_dir(c, fleet)
    hdir = fdir / "head"
    addr = json.loads((hdir / "head.json").read_text())
    user = pwd.getpwuid(os.geteuid()).pw_name
    chroot = os.geteuid() == 0
    if chroot:
        bad = _chroot_problem(root)
        if bad:
            raise Exit(f"shared.root {root} cannot be chrooted: {bad} is not root's or is writable by others; "
                       "choose a shared.root below root-owned folders (INVOKE_SHARED_ROOT)")
        extra = ["PermitRootLogin prohibit-password", f"ChrootDirectory {root}", "ForceCommand internal-sftp"]
        head = Head(addr["host"], addr["port"], user, "/")
    else:
        extra = [f"ForceCommand internal-sftp -d {root}"]
        head = Head(addr["host"], addr["port"], user, str(root))
    node_pub = (fdir / "node_ed25519.pub").read_text().strip()
    (hdir / "authorized_keys").write_text(f"restrict {node_pub}\n")
    cfg = hdir / "sshd_config"
    cfg.write_text(local.sshd_config(
        listen=head.host, port=head.port, host_key=hdir / "ssh_host_ed25519_key", pid_file=hdir / "sshd.pid",
        authorized=hdir / "authorized_keys", user=user,
        extra=extra + ["AllowTcpForwarding no", "AllowAgentForwarding no", "Subsystem sftp internal-sftp"]))
    return cfg, head


def start(c, fleet: str) -> Head:
    """Start (or keep) the fleet's head sshd; return where nodes reach it."""
    root = shared_root(c)
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chmod(root, 0o700)  # nodes see the shared disk only through their mount
    local.ensure_fleet(c, fleet)
    local.ensure_head_address(c, fleet)
    cfg, head = _config(c, fleet, root)
    hdir = cfg.parent
    if local.sshd_alive(procs.read_pid(hdir / "sshd.pid"), cfg) is None:
        local.start_sshd(cfg, hdir / "sshd.log")
        for _ in range(100):
            if local.banner(head.host, head.port, timeout=0.5):
                break
            time.sleep(0.05)
        else:
            raise Exit(f"the head sshd did not start on {head.host}:{head.port}: see {hdir / 'sshd.log'}")
    return head


def stop(c, fleet: str) -> None:
    hdir = local.fleet_dir(c, fleet) / "head"
    proc = local.sshd_alive(procs.read_pid(hdir / "sshd.pid"), hdir / "sshd_config")
    if proc is not None:
        procs.kill_all([proc])
