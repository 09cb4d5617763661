"""Prices: the machine types a fleet may use, USD per node-hour from the settings' table, the estimate line
printed before creating, and the one-line capacity error."""
from __future__ import annotations

from playbooks.providers.cloud.names import region_of, split_list
from playbooks.settings import setting

HEAD_TYPE = {"gcp": "head_machine_type", "aws": "head_instance_type"}   # the head instance's machine type
TYPE_SETTINGS = {"gcp": ("machine_type", "machine_types"), "aws": ("instance_type", "instance_types")}


def _settings(c, provider: str):
    return c.config[provider]


def machine_types(c, provider: str) -> list[str]:
    """The machine (GCP) or instance (AWS) types a fleet may use: ``<provider>.machine_types`` /
    ``instance_types`` (a list, or comma-separated from the environment), else the single-value setting."""
    one, many = TYPE_SETTINGS[provider]
    s = _settings(c, provider)
    return list(dict.fromkeys(split_list(s.get(many)) or [str(s[one])]))


def price_per_hour(c, provider: str, spot: bool, machine_type: str | None = None,
                   zone: str | None = None) -> float | None:
    """USD per node-hour for a machine type (default: the provider's first type), or None when unknown.

    ``<provider>.price_spot`` / ``price_on_demand`` override every type.  Else the table ``<provider>.prices``
    (cloud_config.py, extendable in invoke.yaml) is read at ``<zone>/<type>``, then ``<region>/<type>``, then
    ``<type>``: the most specific entry wins."""
    if provider not in ("gcp", "aws"):
        p = setting(c, "fleet.price_per_hour")
        return p or None
    s = _settings(c, provider)
    explicit = float(s.get("price_spot" if spot else "price_on_demand", 0) or 0)
    if explicit:
        return explicit
    mtype = machine_type or machine_types(c, provider)[0]
    table = s.get("prices") or {}
    keys = [f"{zone}/{mtype}", f"{region_of(zone)}/{mtype}"] if zone else []
    pair = next((table.get(k) for k in [*keys, mtype] if table.get(k)), None)
    if not pair:
        return None
    return float(pair[0] if spot else pair[1]) or None


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{" + ", ".join(items) + "}"


def estimate(c, provider: str, count: int, spot: bool, ttl_hours: float, zones: list[str] | None = None) -> str:
    """One line to print before creating: what the fleet costs per hour and at most over its TTL (a range
    when it may use several machine types or zones)."""
    types = machine_types(c, provider)
    kind = "spot" if spot else "on-demand"
    what = f"{count} x {_listed(types)} ({kind})"
    prices = {t: [price_per_hour(c, provider, spot, t, z) for z in (zones or [None])] for t in types}
    unknown = [t for t, ps in prices.items() if None in ps]
    if unknown:
        key = f"{provider}.price_{'spot' if spot else 'on_demand'}"
        if len(types) > 1:
            return f"cost: {what}: price unknown for {', '.join(unknown)}; add it to {provider}.prices or set {key}"
        return f"cost: {what}: price unknown; set {key}"
    every = [p for ps in prices.values() for p in ps]
    low, high = min(every), max(every)
    if low == high:
        return (f"cost: {what} at ${low:.4f}/h = ${count * low:.2f}/h, "
                f"at most ${count * low * ttl_hours:.2f} over the {ttl_hours:g} h TTL")
    return (f"cost: {what} at ${low:.4f}-{high:.4f}/h = ${count * low:.2f}-{count * high:.2f}/h, "
            f"at most ${count * high * ttl_hours:.2f} over the {ttl_hours:g} h TTL")


def capacity_line(cloud: str, count: int, spot: bool, types: list[str], places: list[str], place_word: str,
                  what: str, cleaned: str, widen: str) -> str:
    """The one-line capacity error: what was asked, what was tried (places x types), what to widen."""
    kind = "spot" if spot else "on-demand"
    tried = f"tried {len(places)} {place_word}{'s' if len(places) != 1 else ''} x {len(types)} type" \
            f"{'s' if len(types) != 1 else ''}"
    return (f"{cloud} has no capacity or quota for {count} x {_listed(types)} ({kind}) in {_listed(places)} "
            f"({tried}: {what}); {cleaned}. Widen {widen}, ask for fewer nodes (-n/--min) or --no-spot, "
            "or raise the quota")
