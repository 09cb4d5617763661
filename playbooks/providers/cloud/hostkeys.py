"""Host keys and readiness: the fleet's key, the host keys the cloud vouches for (or first use), pinning them in
the fleet's known_hosts, and waiting until every node answers SSH."""
from __future__ import annotations

import re
import socket
import time

from playbooks.providers.types import RUNNING, Node, NodesNotReady
from playbooks.settings import setting
from playbooks.settings.defaults import fleet_dir
from playbooks.ssh import ports


def public_key(c, name: str) -> str:
    """The fleet's own public key line (created on first use, under the fleet's state dir)."""
    from playbooks.ssh.keys import keypair
    return keypair(fleet_dir(c, name) / "id_ed25519", f"fleetbook-{name}")


def parse_console_host_keys(text: str) -> list[str]:
    """Host key lines between cloud-init's ``-----BEGIN SSH HOST KEY KEYS-----`` markers (EC2 console)."""
    m = re.search(r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", text or "", re.S)
    if not m:
        return []
    keys = []
    for line in m.group(1).splitlines():
        parts = line.strip().split()
        if len(parts) >= 2 and (parts[0].startswith("ssh-") or parts[0].startswith("ecdsa-")):
            keys.append(f"{parts[0]} {parts[1]}")
    return keys


def scan_host_key(host: str, port: int, timeout: float) -> str:
    """The key the server shows now (``type base64``), for trust-on-first-use when the cloud gives none."""
    import paramiko
    sock = socket.create_connection((host, port), timeout=timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.get_security_options().key_types = ["ssh-ed25519"] + [
            k for k in transport.get_security_options().key_types if k != "ssh-ed25519"]
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    finally:
        transport.close()


def pin_keys(c, name: str, node: Node, keys: list[str]) -> None:
    """Pin the node's trusted host key (ed25519 preferred) in the fleet's known_hosts."""
    from playbooks.ssh.keys import pin
    if not keys:
        return
    best = sorted(keys, key=lambda k: (not k.startswith("ssh-ed25519"), k))[0]
    pin(fleet_dir(c, name) / "known_hosts", node.host, node.port, best)


def known_entry(c, name: str, node: Node) -> bool:
    from playbooks.ssh.keys import host_entry
    kh = fleet_dir(c, name) / "known_hosts"
    entry = host_entry(node.host, node.port)
    return kh.exists() and any(ln.split(" ", 1)[0] == entry for ln in kh.read_text().splitlines())


def ssh_answers(c, name: str, node: Node) -> tuple[bool, str]:
    """True when ``true`` runs on the node with the fleet key and the pinned host key (RejectPolicy)."""
    from playbooks.ssh.fanout import connect, describe
    conn = None
    try:
        conn = connect(c, name, node)
        result = conn.run("true", hide=True, warn=True, in_stream=False,
                          timeout=setting(c, "fleet.ssh_timeout"))
        return result.exited == 0, f"exit {result.exited}"
    except Exception as exc:
        return False, describe(exc)
    finally:
        if conn is not None:
            conn.close()


def wait_ready(c, name: str, timeout: float, list_nodes, trusted_keys, poll: float = 2.0) -> list[Node]:
    """Wait until every node of the fleet runs, has a pinned host key and answers SSH.

    ``trusted_keys(node)`` returns the host keys the cloud vouches for (guest attributes, console output) or
    [] when it has none yet.  A node whose cloud never gives a key within half the timeout is pinned on first
    use (accept-new) into the fleet's own known_hosts only, and a message says so.
    """
    start = time.monotonic()
    end = start + float(timeout)
    ready: dict[str, Node] = {}
    why: dict[str, str] = {}
    tofu: list[str] = []
    while True:
        nodes = list_nodes(c, name)
        if not nodes:
            raise NodesNotReady([name], "fleet has no nodes")
        for node in nodes:
            if node.name in ready:
                continue
            if node.state != RUNNING or not node.host:
                why[node.name] = f"state {node.state}"
                continue
            keys = trusted_keys(node)
            if keys:
                pin_keys(c, name, node, keys)   # the cloud vouches: replaces a stale entry for a reused address
            elif not known_entry(c, name, node):
                if time.monotonic() - start > float(timeout) / 2 and ports.answers(node.host, node.port, 3):
                    try:
                        pin_keys(c, name, node, [scan_host_key(node.host, node.port, 5)])
                        tofu.append(node.name)
                    except Exception as exc:  # noqa: BLE001 - keep waiting
                        why[node.name] = f"host key scan failed: {exc}"
                        continue
                else:
                    why[node.name] = "no host key from the cloud yet"
                    continue
            ok, detail = ssh_answers(c, name, node)
            if ok:
                ready[node.name] = node
            else:
                why[node.name] = detail
        if len(ready) == len(nodes):
            if tofu:
                print(f"note: {len(tofu)} host key(s) pinned on first use (cloud gave none): {', '.join(tofu)}")
            return [ready[n.name] for n in nodes]
        if time.monotonic() >= end:
            missing = [n.name for n in nodes if n.name not in ready]
            detail = "; ".join(f"{n}: {why.get(n, '?')}" for n in missing[:5])
            raise NodesNotReady(missing, f"did not answer SSH in {timeout:g} s ({detail})")
        time.sleep(poll)


def forget_hosts(c, name: str, nodes: list[Node]) -> None:
    """Drop the known_hosts entries of deleted nodes: a later VM may get the same address with a new key."""
    from playbooks.ssh.keys import unpin
    kh = fleet_dir(c, name) / "known_hosts"
    for node in nodes:
        if node.host:
            unpin(kh, node.host, node.port)
