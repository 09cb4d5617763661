"""What the shared disk costs per item, from one probe run through a node's mount (``bench/disk_probe.py``).

``figures(probe, head_cpu_s)`` turns the probe's JSON line and the head's CPU seconds during it into the profile's
``shared_disk[<workload>]`` entry, which ``invoke plan`` reads:

* ``node_cpu_s_per_item``: the node's sshfs and its ssh, per item (CPU seconds);
* ``head_cpu_s_per_item``: the head's sshd sessions (SFTP), per item; None when the head is not this machine
  (a head instance: its CPU is not measured, the planner keeps its default);
* ``item_wall_s``: one worker's wall time per item through the mount: the work plus every wait on the shared
  disk (reading the input, the claim, writing the temp file, the rename);
* ``work_cpu_s_per_item``: the workload process's own CPU per item (start-up included, so a little high);
* ``start_cpu_s``: the CPU of one run of it with nothing to do (interpreter, imports, listing, exit), which every
  node pays once; None when not measured (older probes);
* ``run_cpu_s_per_item``: the workload process's CPU per item through the mount without that start:
  ``(work_cpu_s - start_cpu_s) / items`` (the work, its system calls through FUSE, its claims and renames),
  never below 0; without a start figure, ``work_cpu_s_per_item``;
* ``help_cpu_s_per_item``: what one more node costs per item of the run, in CPU of the runners, the node's
  sshfs+ssh and the head's sshd together: the probe's two-shard run (``--step help``: two runners at once, each
  going over the other's shard once it is done with its own, as every node of a fleet goes over the others')
  less the one-runner run and one more start, per item; never below 0; None when not measured.
"""
from __future__ import annotations


def total_cpu_s(probe: dict, head_cpu_s: float | None) -> float:
    """CPU seconds of one probe run: its runners, the node's mount processes, the head's sessions (if known)."""
    return float(probe["work_cpu_s"]) + float(probe["node_cpu_s"]) + (head_cpu_s or 0.0)


def help_cost(probe: dict, head_cpu_s: float | None, helped: dict | None, helped_head_s: float | None,
              start: float | None) -> float | None:
    """``help_cpu_s_per_item`` (see above) or None: the two-shard run must have done every item once, the head
    be measured in both runs or in neither."""
    items = int(probe.get("done") or 0)
    if not helped or helped.get("exit") or int(helped.get("done") or 0) != items or items <= 0 \
            or (head_cpu_s is None) != (helped_head_s is None):
        return None
    extra = total_cpu_s(helped, helped_head_s) - total_cpu_s(probe, head_cpu_s) - (start or 0.0)
    return round(max(0.0, extra) / items, 6)


def figures(probe: dict, head_cpu_s: float | None, helped: dict | None = None,
            helped_head_s: float | None = None) -> dict | None:
    """The profile entry for one probe (``helped``: its two-shard run and the head's CPU during it), or None when
    it processed nothing."""
    items = int(probe.get("done") or 0)
    if items <= 0 or probe.get("exit"):
        return None
    work = float(probe["work_cpu_s"])
    start = probe.get("start_cpu_s")
    start = float(start) if isinstance(start, (int, float)) and start >= 0 else None
    return {
        "items": items,
        "node_cpu_s_per_item": round(float(probe["node_cpu_s"]) / items, 6),
        "head_cpu_s_per_item": round(head_cpu_s / items, 6) if head_cpu_s is not None else None,
        "item_wall_s": round(float(probe["seconds"]) / items, 6),
        "work_cpu_s_per_item": round(work / items, 6),
        "start_cpu_s": round(start, 4) if start is not None else None,
        "run_cpu_s_per_item": round(max(0.0, work - (start or 0.0)) / items, 6),
        "help_cpu_s_per_item": help_cost(probe, head_cpu_s, helped, helped_head_s, start),
        "mount_processes": probe.get("mount_processes"),
    }


def entry(profile: dict, workload: str) -> dict:
    """The shared-disk figures of ``workload`` in a profile: its own entry, else the flat one of older profiles
    (``shared_disk: {node_cpu_s_per_item, head_cpu_s_per_item}``), else {}."""
    disk = profile.get("shared_disk") or {}
    own = disk.get(workload)
    if isinstance(own, dict):
        return own
    return {k: v for k, v in disk.items() if not isinstance(v, dict)}


def summary(disk: dict) -> str:
    """One line per workload, for ``bench --node``'s output."""
    parts = []
    for workload, f in sorted(disk.items()):
        if not isinstance(f, dict):
            continue
        head = f.get("head_cpu_s_per_item")
        parts.append(f"{workload} node {f['node_cpu_s_per_item'] * 1e3:.2f} ms, head "
                     + (f"{head * 1e3:.2f} ms" if head is not None else "not measured")
                     + f", one worker {f['item_wall_s'] * 1e3:.2f} ms wall"
                     + (f", its CPU {f['run_cpu_s_per_item'] * 1e3:.2f} ms + {f['start_cpu_s']:.2f} s to start"
                        if f.get("start_cpu_s") is not None else "")
                     + (f", each more node {f['help_cpu_s_per_item'] * 1e3:.2f} ms"
                        if f.get("help_cpu_s_per_item") is not None else ""))
    return "shared disk per item (CPU; " + str(next(iter(disk.values()), {}).get("items", "?")) + " items): " \
        + ("; ".join(parts) if parts else "not measured")
