"""The provider contract, shared by ``local``, ``gcp`` and ``aws``.

A provider is a module with these functions (plain functions and frozen dataclasses, as in SkyPilot's
``sky/provision``).  Labels/tags on the machines are the only truth about a fleet: nothing here keeps a local
list of nodes that could drift from what really runs.

``create(c, spec: FleetSpec) -> list[Node]``
    Idempotent: counts the nodes that already carry ``fleet=<spec.name>`` and creates only the gap up to
    ``spec.count``.  Returns the fleet's nodes after creation.  With ``spec.dry_run`` it sends nothing and
    returns the nodes that exist.
``list_nodes(c, name: str) -> list[Node]``
    The fleet's nodes as the provider sees them now, with a live ``state``.
``wait_ready(c, name: str, timeout: float) -> list[Node]``
    Waits until every node answers SSH and its host key is pinned in the fleet's known_hosts; raises
    ``NodesNotReady`` naming the nodes that never came up.
``terminate(c, name: str, dry_run=False) -> int``
    Stops and deletes every node of the fleet, re-listing until none remain; "already gone" is success.
    Returns how many nodes it removed.
``head(c, fleet) -> Head`` (optional; cloud providers)
    Where the nodes mount the shared disk from (the operator's machine through tunnels, or the head instance).
``find_head(c, fleet)`` (cloud providers)
    The fleet's running head instance (its Node, internal address, zone) or None: where the shared disk lives
    when it is not on this machine (``runs/disk.py`` reads run state and progress there).
``kill_node(c, name: str, node: str)`` (optional, for fault tests)
    Makes one node vanish as a whole, like a preempted VM.

``c`` is the Invoke context (settings are read as ``c.config.<subtree>``).  SDKs are imported lazily: the
registry below imports ``playbooks.providers.<name>`` only when that provider is used, so boto3 loads only for
``aws``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from invoke.exceptions import Exit

PROVIDERS = ("local", "gcp", "aws")

# Node states, one vocabulary for every provider.
RUNNING = "running"
PENDING = "pending"
UNREACHABLE = "unreachable"
STOPPED = "stopped"
TERMINATED = "terminated"

# Node.labels keys a cloud provider adds from the instance itself: where it runs and its machine/instance type.
ZONE_KEY = "zone"
TYPE_KEY = "machine_type"


@dataclass(frozen=True)
class FleetSpec:
    name: str
    count: int
    provider: str = "local"
    spot: bool = True
    min_count: int | None = None
    ttl_hours: float = 4.0
    dry_run: bool = False
    wait: bool = True
    head: str = ""      # cloud: "tunnel" or "instance" ("" = the provider's <provider>.head setting)


@dataclass(frozen=True)
class Node:
    """One machine of a fleet, as seen by its provider right now."""

    name: str          # unique inside the fleet, e.g. "fb-demo-0"
    host: str          # address the operator's machine connects to
    port: int = 22
    user: str = "root"  # login user on the node
    state: str = RUNNING
    id: str = ""       # provider's id (instance id, pid, ...)
    labels: dict = field(default_factory=dict, compare=False, hash=False)
    started_at: float | None = None  # epoch seconds, for uptime
    mountpoint: str = "/mnt/fleetbook"  # where the shared disk appears on this node
    python: str = "python3"             # interpreter the workloads run with on this node
    workdir: str = "fleetbook"          # where deploy puts workloads/, relative to the login home


class NodesNotReady(Exception):
    def __init__(self, nodes: list[str], why: str = "did not answer SSH in time"):
        super().__init__(f"{len(nodes)} node(s) {why}: {', '.join(nodes)}")
        self.nodes = nodes


def get(name: str) -> ModuleType:
    """Import the provider module ``name`` (lazily), or end with a one-line error."""
    if name not in PROVIDERS:
        raise Exit(f"unknown provider {name!r}: choose one of {', '.join(PROVIDERS)} (--provider or fleet.provider)")
    try:
        return importlib.import_module(f"playbooks.providers.{name}")
    except ImportError as exc:  # an SDK extra is missing
        raise Exit(f"provider {name!r} needs {exc.name}: pip install -e '.[cloud]'") from None
