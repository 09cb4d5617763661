"""Where a ``local`` fleet lives and how it is isolated: its folders (its own state, and what other local users
must reach), the isolation mode (a user per node, or none) and netns, the tools it needs, the addresses in use.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

from playbooks.providers.types import ProviderError
from playbooks.settings.defaults import fleet_dir, public_dir, repo_path, state_dir
from playbooks.ssh import keys as sshkeys
from playbooks.settings import setting

SSHD = "/usr/sbin/sshd"


def public_fleet_dir(c, fleet: str) -> Path:
    """What of the fleet other local users must reach (``config.public_dir``): node folders, the head's chroot."""
    return public_dir(c) / fleet


def nodes_dir(c, fleet: str) -> Path:
    return public_fleet_dir(c, fleet) / "nodes"


def node_dir(c, fleet: str, node: str) -> Path:
    return nodes_dir(c, fleet) / node


def isolation(c) -> str:
    wanted = setting(c, "local.isolation")
    if wanted not in ("auto", "user", "none"):
        raise ProviderError(f"local.isolation is {wanted!r}: use auto, user or none")
    if wanted == "user" and os.geteuid() != 0:
        raise ProviderError("local.isolation=user needs root: run as root or set INVOKE_LOCAL_ISOLATION=none")
    return "user" if (wanted == "user" or (wanted == "auto" and os.geteuid() == 0)) else "none"


def use_netns(c, mode: str) -> bool:
    if not c.config.local.netns:
        return False
    if mode != "user":
        raise ProviderError("local.netns needs root (and local.isolation user): unset INVOKE_LOCAL_NETNS or run as root")
    return True


def _check_tools() -> None:
    missing = [t for t in (SSHD, "sshfs", "fusermount3") if not shutil.which(t)]
    if missing:
        raise ProviderError(f"missing {', '.join(missing)}: install openssh-server sshfs fuse3 (./setup.sh does)")


def _used_addresses(c) -> set[str]:
    used = set()
    for labels in public_dir(c).glob("*/nodes/*/node.json"):
        used.add(json.loads(labels.read_text())["host"])
    for head in state_dir(c).glob("*/head/head.json"):
        used.add(json.loads(head.read_text())["host"])
    return used


def public_folder(c, path: Path, mode: int = 0o711) -> Path:
    """Make ``path`` below ``local.public_dir`` a root-owned folder of ``mode`` (0711: node users pass through
    to their own folder and can neither list nor change anything on the way), with every folder above it
    root's and writable by nobody else, so that no other user can swap what the nodes are given."""
    top = repo_path(setting(c, "local.public_dir"))
    if not path.is_relative_to(top):
        raise ValueError(f"{path} is not below {top}")
    for folder in reversed(top.parents):
        st = folder.stat()
        if st.st_uid != 0 or st.st_mode & 0o022 or not st.st_mode & 0o001:
            raise ProviderError(f"{folder} must be root's, writable by nobody else and open to others (0755) to hold the "
                                "nodes' folders: fix its mode or set local.public_dir (INVOKE_LOCAL_PUBLIC_DIR)")
    folder = top
    for part in ("", *path.relative_to(top).parts):
        folder = folder / part
        folder.mkdir(mode=mode, exist_ok=True)
        st = folder.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            raise ProviderError(f"{folder} is not a folder of root's: remove it, or set local.public_dir")
        os.chmod(folder, 0o711 if folder != path else mode)
    return path


def ensure_fleet(c, fleet: str) -> Path:
    """Keys of the fleet (operator -> nodes, nodes -> head) and the head's host key; idempotent.  The
    operator's keys stay in the private state folder; what node users must read goes below ``nodes_dir``."""
    fdir = fleet_dir(c, fleet)
    for d in (fdir, fdir / "head"):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700 if os.geteuid() == 0 else 0o711)
    if os.geteuid() == 0:
        public_folder(c, nodes_dir(c, fleet))
    else:
        nodes_dir(c, fleet).mkdir(parents=True, exist_ok=True)
    sshkeys.keypair(fdir / "id_ed25519", f"fleetbook-operator@{fleet}")
    sshkeys.keypair(fdir / "node_ed25519", f"fleetbook-node@{fleet}")
    sshkeys.keypair(fdir / "head" / "ssh_host_ed25519_key", f"fleetbook-head@{fleet}")
    return fdir
