"""A cloud fleet's names and labels: the labels every instance carries, their checks, the TTL deadline."""
from __future__ import annotations

import re
import time

from playbooks.providers.types import ProviderError, TYPE_KEY, ZONE_KEY, check_name  # noqa: F401

FLEET_LABEL = "fleet"
DEADLINE_LABEL = "fleetbook-deadline"   # epoch seconds (digits: a valid GCP label value)
SPOT_LABEL = "fleetbook-spot"           # "true" / "false": which price applies
IMAGE_HASH_LABEL = "fleetbook-image-hash"
NETWORK_TAG = "fleetbook"

LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
LABEL_KEY_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def check_spec(spec) -> tuple[str, int]:
    """What every cloud create checks first: the fleet name, -n and --min; returns (name, min_count)."""
    name = check_name(spec.name)
    if spec.count < 1:
        raise ProviderError("the fleet needs at least one node (-n)")
    min_count = spec.min_count or spec.count
    if not 1 <= min_count <= spec.count:
        raise ProviderError(f"--min {min_count} must be between 1 and -n {spec.count}")
    return name, min_count


def check_labels(labels: dict) -> dict:
    for key, value in labels.items():
        if not LABEL_KEY_RE.match(key) or not LABEL_VALUE_RE.match(str(value)):
            raise ProviderError(f"invalid label {key}={value!r}: lowercase letters, digits, '-' and '_', at most 63")
    return labels


def split_list(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value or "").split(",") if v.strip()]


def deadline(ttl_hours: float, now: float | None = None) -> int:
    if not ttl_hours or ttl_hours <= 0:
        raise ProviderError("--ttl must be a positive number of hours: cloud nodes always delete themselves")
    return int((now or time.time()) + ttl_hours * 3600)


def fleet_labels(name: str, ttl_hours: float, spot: bool) -> dict:
    return check_labels({FLEET_LABEL: name, DEADLINE_LABEL: str(deadline(ttl_hours)),
                         SPOT_LABEL: "true" if spot else "false"})


def node_facts(labels: dict, zone: str, machine_type: str) -> dict:
    """A node's labels/tags plus where it runs and its type, as read from the instance."""
    return {**labels, ZONE_KEY: zone, TYPE_KEY: machine_type}


def region_of(zone: str) -> str:
    """``us-central1-a`` -> ``us-central1`` (GCP), ``us-east-1a`` -> ``us-east-1`` (AWS)."""
    return re.sub(r"(-[a-z]|[a-z])$", "", zone)
