"""The contract hooks gcp and aws share, written once: the cost so far, where the nodes mount from (the head
instance, else this machine through tunnels), and closing the tunnels.

Each hook looks the provider's own ``list_nodes`` / ``find_head`` up when it is called (a test may replace them).
"""
from __future__ import annotations

import importlib

from playbooks.providers.cloud import head_mount as on_head
from playbooks.providers.cloud.cost import run_cost
from playbooks.providers.cloud.head_boot import head_mode
from playbooks.providers.cloud.prices import HEAD_TYPE, estimate, price_per_hour
from playbooks.providers.cloud.tunnels import tunnel_head
from playbooks.providers.cloud.tunnels import stop_head as close_head


def fleet_estimate(c, provider: str, spec, zones: list[str] | None = None) -> str:
    """The ``estimate`` hook: what the fleet costs (``prices.estimate``), plus its head instance when it has one."""
    line = estimate(c, provider, spec.count, spec.spot, spec.ttl_hours, zones=zones)
    if head_mode(c, provider, spec.head) == "instance":
        s = c.config[provider]
        mtype = s[HEAD_TYPE[provider]]
        price = price_per_hour(c, provider, False, str(mtype))
        line += (f"\n      + head instance 1 x {mtype} (on-demand, {s.head_disk_gb} GB disk) at "
                 + (f"${price:.4f}/h" if price is not None else f"an unknown price ({provider}.price_on_demand)"))
    return line


def shared_hooks(provider: str):
    """``cost_so_far, head, stop_head`` for the provider module ``playbooks.providers.<provider>``."""
    def mod():
        return importlib.import_module(f"playbooks.providers.{provider}")

    def cost_so_far(c, record, elapsed: float | None = None) -> float | None:
        """USD spent so far by a run's nodes (a run record) or by a list of Nodes; None when the price is
        unknown."""
        return run_cost(c, provider, record, elapsed, mod().list_nodes, find_head=mod().find_head)

    def head(c, fleet: str):
        """Where the nodes mount the shared disk from: the fleet's head instance (its address inside the network)
        when it has one, else this machine through one reverse tunnel per node."""
        found = mod().find_head(c, fleet)
        if found is not None:
            return on_head.instance_head(c, provider, fleet, found.node, found.private_ip, mod().list_nodes)
        return tunnel_head(c, provider, fleet, mod().list_nodes)

    def stop_head(c, fleet: str) -> int:
        """Close the fleet's reverse tunnels and stop its head sshd (fleet.down does this too)."""
        return close_head(c, fleet)

    return cost_so_far, head, stop_head
