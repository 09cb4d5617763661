"""Machine profiles per machine type: where they live and which one a node gets.

``invoke bench`` measures the operator's machine and writes ``bench.profile`` (``.fleetbook/profile.json``);
``invoke bench --node NODE`` measures one fleet node, i.e. the hardware the job will run on, and stores its
profile per machine type in ``bench.profiles`` (``.fleetbook/profiles/<provider>-<machine type>.json``).
``invoke deploy`` ships each node the profile of its own machine type, never the operator's (a profile made on
a 2-core laptop would make a 64-core node run 2 workers).  A local node's machine type is ``<N>cpu`` with
N = ``local.cores_per_node``: local nodes share the head's CPUs and count that many as their own, which they
learn from ``$FLEETBOOK_CORES`` (see ``node_env``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from playbooks.settings import setting
from playbooks.settings.defaults import profile_path, repo_path


def configured_type(c, provider: str) -> str:
    """The machine type a new node of ``provider`` gets from the settings."""
    if provider == "gcp":
        return setting(c, "gcp.machine_type")
    if provider == "aws":
        return setting(c, "aws.instance_type")
    return f"{setting(c, 'local.cores_per_node')}cpu"


TYPE_KEY = "machine_type"   # the Node.labels key a cloud provider fills from the instance (providers.TYPE_KEY)


def machine_type(c, provider: str, node=None) -> str:
    """The machine type of ``node`` as its cloud reports it in its labels, else the provider's setting."""
    reported = (getattr(node, "labels", None) or {}).get(TYPE_KEY) if provider != "local" else None
    return str(reported) if reported else configured_type(c, provider)


def profiles_dir(c) -> Path:
    return repo_path(setting(c, "bench.profiles") or ".fleetbook/profiles")


def profile_file(c, provider: str, mtype: str) -> Path:
    """``<profiles>/<provider>-<machine type>.json`` (characters other than letters, digits, ``.-_`` become _)."""
    return profiles_dir(c) / f"{provider}-{re.sub(r'[^A-Za-z0-9._-]', '_', mtype)}.json"


def load(path: Path) -> dict | None:
    """A profile file's content, or None when it is missing or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def for_node(c, provider: str, node) -> Path | None:
    """The profile file of the node's own machine type, when one has been measured."""
    path = profile_file(c, provider, machine_type(c, provider, node))
    return path if path.is_file() else None


def node_env(c, provider: str) -> dict[str, str]:
    """Environment a command on a node needs to see its own hardware: a local node counts
    ``local.cores_per_node`` cores (its CPUs are the head's); a cloud node counts its own CPUs."""
    return {"FLEETBOOK_CORES": str(setting(c, "local.cores_per_node"))} if provider == "local" else {}


def measured(c, provider: str, mtype: str) -> tuple[dict | None, str]:
    """The profile that describes ``mtype`` best, and what it is: the machine type's own (``bench --node``), else
    this machine's (``invoke bench``), marked as a guess; (None, "") when neither exists."""
    own = load(profile_file(c, provider, mtype))
    if own:
        return own, f"measured on {own.get('node') or 'a node'} ({provider} {mtype}, {own.get('created_at', '?')})"
    here = load(profile_path(c))
    if here:
        return here, (f"guess: measured on this machine ({here.get('cores')} cores, {here.get('cpu_model')}), "
                      f"not on a {provider} {mtype}; run `invoke bench --node NODE` on one")
    return None, ""


def item_seconds(c, provider: str, mtype: str, workload: str) -> tuple[float | None, str]:
    """Measured seconds per item of ``workload`` for that machine type, and where the figure comes from."""
    profile, source = measured(c, provider, mtype)
    value = ((profile or {}).get("item_seconds") or {}).get(workload)
    if isinstance(value, (int, float)) and value > 0:
        return float(value), source
    return None, ""


def type_cores(mtype: str) -> int | None:
    """vCPUs of a cloud machine type, read from its name (GCP ``e2-standard-4`` -> 4, shared-core e2 types 2;
    AWS ``c6i.large`` -> 2, ``.xlarge`` 4, ``.4xlarge`` 16); None when the name does not say."""
    if mtype in ("e2-micro", "e2-small", "e2-medium"):
        return 2
    m = re.fullmatch(r"[a-z0-9]+-[a-z]+-(\d+)(-lssd)?", mtype)
    if m:
        return int(m.group(1))
    m = re.fullmatch(r"[a-z0-9-]+\.(\d*)(nano|micro|small|medium|large|xlarge)", mtype)
    if m:
        if m.group(2) != "xlarge":
            return 2 if not m.group(1) else None
        return 4 * int(m.group(1) or 1)
    return None
