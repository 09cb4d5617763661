"""What crosses the provider contract: frozen records, the node states, the errors.

Plain data only (no SDK, no I/O), so every layer above may import it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from playbooks.settings.errors import FleetbookError

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


@dataclass(frozen=True)
class HeadInstance:
    """A cloud fleet's head instance (the VM holding the shared root), as ``find_head`` returns it."""

    node: Node          # the head as a Node (its public address, for the operator)
    private_ip: str     # the address the nodes mount it from, inside the network
    zone: str = ""      # GCP zone / AWS availability zone it runs in


# --- errors: one-line user messages, turned into Invoke's Exit at the task boundary (settings/errors.py) ------

class ProviderError(FleetbookError):
    """A provider could not do what was asked; the message says why and what to do."""


class NodesNotReady(ProviderError):
    def __init__(self, nodes: list[str], why: str = "did not answer SSH in time"):
        super().__init__(f"{len(nodes)} node(s) {why}: {', '.join(nodes)}")
        self.nodes = nodes


# --- the one fleet-name rule -------------------------------------------------------------------------------

NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_FLEET_NAME = 50   # leaves room for "-####" and the bake prefix under GCP's 63-character instance names
LOCAL_MAX_FLEET_NAME = 20   # a local node's login is fb-<fleet>-<i>: Linux user names have at most 32 characters


def check_name(name: str, max_len: int = MAX_FLEET_NAME) -> str:
    """The one fleet-name rule: a valid instance-name prefix and label value, else a one-line ProviderError."""
    if not name or len(name) > max_len or not NAME_RE.match(name):
        raise ProviderError(f"invalid fleet name {name!r}: not valid as an instance-name prefix; use 1-{max_len} "
                            "lowercase letters, digits and '-', starting with a letter and not ending with '-' (--name)")
    return name
