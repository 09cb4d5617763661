"""A fleet's own SSH material: key pairs and the pinned known_hosts.

Layout under ``<fleet.state_dir>/<fleet>/``:

``id_ed25519`` / ``.pub``     the operator's key for this fleet (authorized on every node)
``node_ed25519`` / ``.pub``   the key nodes use to reach the head: SFTP inside the shared root, nothing else
``known_hosts``               host keys of the fleet's nodes, pinned when the fleet created them
``head/``                     the head's SFTP-only sshd (config, host key, authorized_keys)
``nodes/<node>/``             one local node: its sshd config, host key, labels, home

Host-key checking stays on everywhere: Paramiko under Fabric gets these known_hosts and a RejectPolicy.
"""
from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from playbooks.fs import safefs
from playbooks.fs.public import public_folder
from playbooks.settings.defaults import fleet_dir, nodes_dir


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    safefs.write_file(path, data, mode)


def keypair(path: Path, comment: str) -> str:
    """Create an ed25519 key pair at ``path`` (+ ``.pub``) unless it exists; return the public line."""
    pub = path.with_name(path.name + ".pub")
    if path.exists() and pub.exists():
        return pub.read_text().strip()
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode()} {comment}"
    write_private(path, private)
    write_private(pub, (line + "\n").encode(), 0o644)
    return line


def host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def pin(known_hosts: Path, host: str, port: int, public_line: str) -> None:
    """Pin ``host:port`` to exactly this key in ``known_hosts`` (replacing an older entry for it)."""
    entry = host_entry(host, port)
    keytype, b64 = public_line.split()[:2]
    lines = []
    if known_hosts.exists():
        lines = [ln for ln in known_hosts.read_text().splitlines() if ln.split(" ", 1)[0] != entry]
    lines.append(f"{entry} {keytype} {b64}")
    write_private(known_hosts, ("\n".join(lines) + "\n").encode(), 0o644)


def unpin(known_hosts: Path, host: str, port: int) -> None:
    if not known_hosts.exists():
        return
    entry = host_entry(host, port)
    lines = [ln for ln in known_hosts.read_text().splitlines() if ln.split(" ", 1)[0] != entry]
    write_private(known_hosts, ("\n".join(lines) + "\n").encode() if lines else b"", 0o644)


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
    keypair(fdir / "id_ed25519", f"fleetbook-operator@{fleet}")
    keypair(fdir / "node_ed25519", f"fleetbook-node@{fleet}")
    keypair(fdir / "head" / "ssh_host_ed25519_key", f"fleetbook-head@{fleet}")
    return fdir
