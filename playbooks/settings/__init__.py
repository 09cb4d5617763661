"""Settings: every default (``defaults.py``, ``cloud.py``, ``engines.py``), the paths they name, the flag spellings.

Read a setting through ``setting(c, "fleet.ssh_timeout")``: it finds the value in Invoke's config (``invoke.yaml``,
``INVOKE_*`` environment variables, the defaults) and casts it to the type of its default, so no caller casts.
A task argument that may override it goes in as ``override``: ``setting(c, "job.poll", poll)`` uses ``poll``
unless it is None (or "" for a text setting), the one spelling of "the flag beats the config".
"""
from __future__ import annotations

from typing import Any

from .defaults import DEFAULTS
from .errors import FleetbookError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingError(FleetbookError, ValueError):
    """A setting whose value cannot be read as the type of its default."""


def default_of(key: str) -> Any:
    node: Any = DEFAULTS
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"no setting {key!r}: every setting has a default in playbooks/settings/")
        node = node[part]
    return node


def cast(key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default`` (bool from 0/1/true/false, numbers from text)."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in _TRUE | _FALSE:
                    raise ValueError(value)
                return low in _TRUE
            return bool(value)
        if isinstance(default, int):
            return int(float(value)) if isinstance(value, str) and "." in value else int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            return "" if value is None else str(value)
    except (TypeError, ValueError):
        kind = type(default).__name__
        raise SettingError(f"setting {key} = {value!r} is not a {kind}: fix it in invoke.yaml or "
                           f"INVOKE_{key.upper().replace('.', '_')}") from None
    return value


def setting(c, key: str, override: Any = None) -> Any:
    """The setting ``key`` ("subtree.name") from ``c.config``, cast to its default's type; ``override`` (a task
    argument) wins unless it is None, or "" for a text setting."""
    default = default_of(key)
    if override is not None and not (isinstance(default, str) and override == ""):
        return cast(key, override, default)
    node: Any = c.config
    for part in key.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            return default
    return cast(key, node, default)
