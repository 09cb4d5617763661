"""fw_machine: the defaults a run takes from this machine: its cores, its machine profile, the pool's shape.

The cores are ``$FLEETBOOK_CORES`` when set, else the CPUs this process may run on.  The machine profile is
``$FLEETBOOK_PROFILE``, else ``profile.json`` beside the workloads, else ``<repo>/.fleetbook/profile.json``; it is
used only when it was measured on as many cores.  Standard library only.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OVERHEAD_US = 126.0          # ProcessPoolExecutor per-task cost measured on a 2-core VM (DESIGN.md 4)


def choose_chunksize(n_items: int, workers: int, item_seconds: float | None,
                     per_task_overhead_us: float = DEFAULT_OVERHEAD_US) -> int:
    """Items per pool task.

    The smallest chunk whose per-task overhead is <= 5 % of its work (``overhead <= 0.05 * item_seconds *
    chunk``), capped so that every worker still gets at least 4 chunks (load balance, and a dead node loses
    little).  Unknown or zero item time counts as "very cheap": the cap decides.
    """
    n_items, workers = max(0, int(n_items)), max(1, int(workers))
    if n_items == 0:
        return 1
    cap = max(1, n_items // (4 * workers))
    overhead = max(0.0, float(per_task_overhead_us)) / 1e6
    if not item_seconds or item_seconds <= 0:
        return cap
    need = max(1, math.ceil(overhead / (0.05 * item_seconds) - 1e-9))
    return max(1, min(need, cap))


def load_profile() -> tuple[dict, str | None]:
    """The machine profile (dict, path) or ({}, None); see the module docstring for where it is looked for."""
    env = os.environ.get("FLEETBOOK_PROFILE")
    if env:                                   # set: that file only (a missing file means "no profile")
        candidates = [env]
    else:
        candidates = [os.path.join(HERE, "profile.json"),
                      os.path.join(os.path.dirname(HERE), ".fleetbook", "profile.json")]
    for path in candidates:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data, path
    return {}, None


def machine_cores() -> int:
    """The cores this machine counts as its own: ``$FLEETBOOK_CORES`` when set (a local fleet node shares the
    head's CPUs and counts ``local.cores_per_node``), else the CPUs this process may run on."""
    env = os.environ.get("FLEETBOOK_CORES", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def profile_fits(profile: dict | None) -> bool:
    """Was ``profile`` measured on a machine like this one?  Its ``cores`` (when it records them) must be this
    machine's: a profile made on a 2-core laptop says nothing about a 64-core node, nor the reverse."""
    if not profile:
        return False
    cores = profile.get("cores")
    return not isinstance(cores, int) or cores == machine_cores()


def default_start_method(profile: dict | None = None) -> str:
    methods = multiprocessing.get_all_start_methods()
    wanted = profile.get("start_method") if profile_fits(profile) else None
    if wanted in methods:
        return wanted
    return "fork" if "fork" in methods else methods[0]


def default_workers(profile: dict | None = None) -> int:
    """This machine's cores, or the profile's ``workers`` when the profile is this machine's (never the cores of
    the machine a profile was made on)."""
    wanted = profile.get("workers") if profile_fits(profile) else None
    if isinstance(wanted, int) and wanted > 0:
        return wanted
    return machine_cores()
