"""What a fleet has cost so far (``invoke progress``): node-hours x each node's own price, the fleet listed at
most once a minute (a small cache)."""
from __future__ import annotations

import time

from playbooks.providers.cloud.names import SPOT_LABEL
from playbooks.providers.cloud.prices import HEAD_TYPE, _settings, price_per_hour
from playbooks.providers.types import TYPE_KEY, ZONE_KEY, Node
from playbooks.settings import setting


def cost_so_far(c, nodes: list[Node], provider: str, now: float | None = None) -> float | None:
    """USD spent so far by ``nodes`` (node-hours since each started x the price of its own type and zone);
    None when a price is unknown."""
    now = now or time.time()
    total = 0.0
    for node in nodes:
        spot = str(node.labels.get(SPOT_LABEL, "true")) == "true"
        price = setting(c, "fleet.price_per_hour") or price_per_hour(
            c, provider, spot, node.labels.get(TYPE_KEY) or None, node.labels.get(ZONE_KEY) or None)
        if price is None or node.started_at is None:
            return None
        total += max(0.0, now - node.started_at) / 3600 * price
    return round(total, 4)


_COST_CACHE: dict[tuple[str, str], tuple[float, list[Node], Node | None]] = {}


def run_cost(c, provider: str, record, elapsed: float | None, list_nodes, max_age: float = 60.0,
             find_head=None) -> float | None:
    """The providers' ``cost_so_far`` hook for ``invoke progress``.

    ``record`` is either a list of Nodes or a run record (``{"fleet", "nodes": [{"name"}...]}``); for a record
    the fleet is listed at most once a minute (progress refreshes every second) and each node costs from its
    own start time, plus the fleet's head instance if it has one (on-demand, at the head's machine type).
    When the listing fails, the run's elapsed time x its node count is the estimate.
    """
    if isinstance(record, (list, tuple)):
        return cost_so_far(c, list(record), provider)
    fleet = str(record.get("fleet") or c.config.fleet.name)
    names = {n["name"] for n in record.get("nodes", [])}
    key = (provider, fleet)
    stamp, nodes, head = _COST_CACHE.get(key, (0.0, [], None))
    if time.monotonic() - stamp > max_age:
        try:
            nodes = list_nodes(c, fleet)
            found = find_head(c, fleet) if find_head else None
            head = found.node if found else None
        except Exception:  # noqa: BLE001 - a cost estimate must never break progress
            nodes, head = [], None
        _COST_CACHE[key] = (time.monotonic(), nodes, head)
    mine = [n for n in nodes if n.name in names]
    if mine:
        total = cost_so_far(c, mine, provider)
        if total is not None and head is not None:
            s = _settings(c, provider)
            price = price_per_hour(c, provider, False, s[HEAD_TYPE[provider]])
            if price is None or head.started_at is None:
                return None
            total = round(total + max(0.0, time.time() - head.started_at) / 3600 * price, 4)
        return total
    price = setting(c, "fleet.price_per_hour") or price_per_hour(c, provider, True)
    if price is None or elapsed is None:
        return None
    return round(price * len(names) * elapsed / 3600, 4)
