"""Where a GCP fleet may run, and the one regional request that asks for all of it.

The zones are ``gcp.zones`` (else ``gcp.zone``, a list of one), the machine types ``gcp.machine_types`` (else
``gcp.machine_type``).  With one of each, fleet.create sends the zonal ``instances.bulkInsert`` it always did.
With more, it sends ONE ``regionInstances.bulkInsert`` to the zones' region:

- ``locationPolicy.locations``: ALLOW for every chosen zone and DENY for the region's other zones (read once
  with ``regions.get``), because Compute Engine treats a zone the request does not name as allowed;
- ``locationPolicy.targetShape``: ``gcp.target_shape``, ANY by default: Compute Engine puts the nodes wherever
  it has capacity (split over zones if need be), which is what a batch fleet wants; its own default,
  ANY_SINGLE_ZONE, fails when no single zone can hold the whole count; BALANCED spreads evenly (for serving);
- ``instanceFlexibilityPolicy``: the machine types in one instance selection (no ranks), so Compute Engine
  picks whichever has capacity and, for spot, the lowest preemption risk; ``instanceProperties.machineType``
  is then left out.

Names still follow ``<fleet>-####``; ``count``/``minCount``, spot, labels, TTL and keys are those of the zonal
request.  The operation is a region operation, polled with ``regionOperations.get``.
"""
from __future__ import annotations

from google.cloud import compute_v1
from playbooks.providers.types import ProviderError

from playbooks.providers import cloud as cc
from playbooks.settings import setting

TARGET_SHAPES = ("ANY", "BALANCED", "ANY_SINGLE_ZONE")


def allowed_zones(c) -> list[str]:
    g = c.config.gcp
    return list(dict.fromkeys(cc.split_list(g.zones) or [str(g.zone)]))


def machine_types(c) -> list[str]:
    return cc.machine_types(c, "gcp")


def is_regional(c) -> bool:
    return len(allowed_zones(c)) > 1 or len(machine_types(c)) > 1


def region(c) -> str:
    """The one region of the allowed zones, or a one-line ProviderError."""
    regions = sorted({cc.region_of(z) for z in allowed_zones(c)})
    if len(regions) != 1:
        raise ProviderError(f"gcp.zones spans several regions ({', '.join(regions)}): a fleet's zones must be in one region "
                            "(one regional bulkInsert); run one fleet per region")
    return regions[0]


def check(c) -> None:
    """Settings a regional request needs (one region, a known target shape), checked before any request."""
    if is_regional(c):
        region(c)
        target_shape(c)


def home_zone(c) -> str:
    """Where a zonal request and a head instance go: gcp.zone when it is allowed, else the first allowed zone."""
    zones = allowed_zones(c)
    return setting(c, "gcp.zone") if setting(c, "gcp.zone") in zones else zones[0]


def target_shape(c) -> str:
    shape = str(c.config.gcp.get("target_shape") or "ANY").upper()
    if shape not in TARGET_SHAPES:
        raise ProviderError(f"gcp.target_shape is {shape!r}: choose ANY (capacity first: batch work), BALANCED (even "
                            "spread) or ANY_SINGLE_ZONE (one zone)")
    return shape


def regional_resource(c, region_zones: list[str], resource: compute_v1.BulkInsertInstanceResource) -> None:
    """Turn a zonal bulkInsert resource into the regional one: location and flexibility policies."""
    zones = allowed_zones(c)
    unknown = [z for z in zones if z not in region_zones]
    if unknown:
        raise ProviderError(f"gcp.zones names {', '.join(unknown)}, not a zone of {region(c)} "
                            f"({', '.join(region_zones)}): fix gcp.zones")
    pref = {z: "ALLOW" if z in zones else "DENY" for z in region_zones}
    resource.location_policy = compute_v1.LocationPolicy(
        target_shape=target_shape(c),
        locations={f"zones/{z}": compute_v1.LocationPolicyLocation(preference=p) for z, p in pref.items()})
    types = machine_types(c)
    if len(types) > 1:
        resource.instance_flexibility_policy = compute_v1.InstanceFlexibilityPolicy(instance_selections={
            "fleetbook": compute_v1.InstanceFlexibilityPolicyInstanceSelection(machine_types=types)})
        del resource.instance_properties.machine_type          # not set: the selection says which types


def region_zones(api, name: str) -> list[str]:
    """The zones of region ``name`` (short names), from ``regions.get``."""
    found = api.regions.get(project=api.project, region=name)
    return sorted(str(z).rstrip("/").rsplit("/", 1)[-1] for z in found.zones)


def capacity_error(c, count: int, spot: bool, what: str, cleaned: str) -> ProviderError:
    zones = allowed_zones(c)
    return ProviderError(cc.capacity_line("GCP", count, spot, machine_types(c), zones, "zone", what, cleaned,
                                 f"gcp.zones (more zones of {cc.region_of(zones[0])}) or gcp.machine_types"))
