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
from playbooks.settings.defaults import fleet_dir, nodes_dir, public_dir, repo_path, state_dir  # noqa: F401
from playbooks.ssh.sshd import SSHD
from playbooks.ssh import keys as sshkeys
from playbooks.settings import setting



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


