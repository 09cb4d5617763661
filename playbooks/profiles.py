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

from .config import repo_path


def configured_type(c, provider: str) -> str:
    """The machine type a new node of ``provider`` gets from the settings."""
    if provider == "gcp":
        return str(c.config.gcp.machine_type)
    if provider == "aws":
        return str(c.config.aws.instance_type)
    return f"{int(c.config.local.cores_per_node)}cpu"


def machine_type(c, provider: str, node=None) -> str:
    """The machine type of ``node`` as its cloud reports it (else the provider's setting)."""
    if provider != "local" and node is not None and getattr(node, "machine_type", ""):
        return str(node.machine_type)
    return configured_type(c, provider)


def profiles_dir(c) -> Path:
    return repo_path(c.config.bench.profiles or ".fleetbook/profiles")


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
    return {"FLEETBOOK_CORES": str(int(c.config.local.cores_per_node))} if provider == "local" else {}
