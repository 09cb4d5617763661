"""Per-node network namespaces for the local provider (root, ``local.netns``).

A fleet gets a bridge ``fbb<hash>`` holding ``10.213.<k>.1/24`` (the head's address for that fleet); node ``i``
gets a namespace ``fb-<fleet>-<i>`` whose ``eth0`` (``10.213.<k>.<10+i>``) is one end of a veth pair, the
other end ``fbv<hash><i>`` sitting on the bridge.  That host-side end is the node's link, recorded in its
labels as ``link``: cut it (``ip link set <link> down``) or slow it (``tc qdisc add dev <link> root tbf ...``)
and only that node feels it.  These addresses exist only inside namespaces the fleet made itself.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from playbooks.providers.types import ProviderError

NET = "10.213"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise ProviderError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _tag(fleet: str) -> str:
    return hashlib.sha1(fleet.encode()).hexdigest()[:6]


def ns_name(fleet: str, index: int) -> str:
    return f"fb-{fleet}-{index}"


def exec_prefix(fleet: str, index: int) -> list[str]:
    return ["ip", "netns", "exec", ns_name(fleet, index)]


def read(fdir: Path) -> dict | None:
    try:
        return json.loads((fdir / "net.json").read_text())
    except (OSError, ValueError):
        return None


def node_address(net: dict, index: int) -> str:
    if index > 200:
        raise ProviderError("a netns fleet holds at most 200 nodes")
    return f"{NET}.{net['subnet']}.{10 + index}"


def ensure_bridge(state: Path, fdir: Path, fleet: str) -> dict:
    net = read(fdir)
    if net is None:
        used = {json.loads(p.read_text())["subnet"] for p in state.glob("*/net.json")}
        in_use = _ip("-o", "-4", "addr", "show").stdout
        subnet = next((k for k in range(1, 255) if k not in used and f" {NET}.{k}." not in in_use), None)
        if subnet is None:
            raise ProviderError("no free 10.213.x.0/24 subnet for another netns fleet: bring a fleet down first")
        net = {"bridge": f"fbb{_tag(fleet)}", "subnet": subnet, "gateway": f"{NET}.{subnet}.1"}
        (fdir / "net.json").write_text(json.dumps(net))
    if _ip("link", "show", net["bridge"], check=False).returncode != 0:
        _ip("link", "add", net["bridge"], "type", "bridge")
        _ip("addr", "add", f"{net['gateway']}/24", "dev", net["bridge"])
        _ip("link", "set", net["bridge"], "up")
    return net


def add_node(net: dict, fleet: str, index: int, host: str) -> str:
    """Make the node's namespace and link; return the link's host-side name."""
    ns, link, peer = ns_name(fleet, index), f"fbv{_tag(fleet)}{index}", f"fbp{_tag(fleet)}{index}"
    remove_node(ns)
    _ip("link", "del", link, check=False)
    _ip("netns", "add", ns)
    _ip("link", "add", link, "type", "veth", "peer", "name", peer)
    _ip("link", "set", peer, "netns", ns)
    _ip("-n", ns, "link", "set", peer, "name", "eth0")
    _ip("-n", ns, "addr", "add", f"{host}/24", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("link", "set", link, "master", net["bridge"])
    _ip("link", "set", link, "up")
    return link


def remove_node(ns: str) -> None:
    _ip("netns", "del", ns, check=False)  # its veth pair goes with it


def remove_bridge(fdir: Path) -> None:
    net = read(fdir)
    if net:
        _ip("link", "del", net["bridge"], check=False)
