"""What holds a node back, decided from its sample series alone (a pure function, no I/O).

The input is what ``overhead_sample.py`` prints (``{"samples": [{"machine": {...}, "procs": {...}}, ...]}``).
``classify(series, cores=..., shared=...)`` returns one of ``VERDICTS`` with a one-line lever.

``shared=True`` is a local fleet: every node runs on one machine, so machine-wide figures (disk and network
MB/s, IOPS, load, memory, swap) are the same for every node and only the node's own processes tell its story:
their CPU, what their threads wait on, their block I/O, RSS and major faults.  ``cores`` is then the node's
share (``local.cores_per_node``).  ``shared=False`` is a cloud node: machine-wide figures are its own, and
``cores`` defaults to the machine's CPU count.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean

COMPUTE, DISK, NETWORK, MEMORY, UNDER, IDLE = (
    "compute-bound", "disk-bound", "network-bound", "memory-bound", "under-used", "idle")
VERDICTS = (COMPUTE, DISK, NETWORK, MEMORY, UNDER, IDLE)

# Thresholds, in one place.
BUSY_SHARE = 0.75       # busy (or runnable) cores / node cores at or above which a node is compute-bound
WAIT_PCT = 20.0         # % of the node's core-time spent waiting on disk (or network) that makes it the bound
ACTIVE_CORES = 0.1      # below this many busy/runnable/waiting threads (and no I/O) a node is idle
ACTIVE_DISK_MB_S = 0.5  # own block I/O above this is activity
SWAP_MB_S = 1.0         # swap in+out that counts as memory pressure
MEM_FULL_PCT = 95.0     # memory in use that counts as memory pressure
NODE_MAJFLT_S = 20.0    # a node's own major faults/s that tie memory pressure to its processes
PSI_MEM_PCT = 5.0       # % of time some task stalled on memory (PSI) that counts as memory pressure
STARVED_CORES = 0.5     # runnable minus got, in cores, to call a node CPU-starved

# Figures that are machine-wide, hence the same for every node of a local fleet.
SHARED_FIGURES = ("disk_iops", "net_mb_s", "load1", "mem_used_pct", "swap_mb_s", "psi_mem_pct", "psi_io_pct")


@dataclass(frozen=True)
class Verdict:
    node: str
    verdict: str
    lever: str                      # one line: "<verdict>: <figures>; <what to do>"
    figures: dict = field(default_factory=dict, compare=False)
    shared: tuple = ()              # names of figures that are machine-wide on a shared machine


def _num(x) -> str:
    """1.0 -> '1', 1.44 -> '1.4'."""
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _mean(values) -> float:
    values = list(values)
    return fmean(values) if values else 0.0


def _lo(shared: bool, own_net: bool) -> float:
    """How much loopback traffic counts as the node's network: on a shared machine without own links the
    nodes talk to the head over loopback; with its own link (or on a cloud node) loopback stays inside."""
    return 1.0 if shared and not own_net else 0.0


def summarize(series: dict, *, cores: float | None = None, shared: bool = False, own_net: bool = False) -> dict:
    """Average figures of a node over its samples, as the node sees them (see the module docstring).

    ``own_net``: on a shared machine, the node still has its own network link (a local node in its own
    network namespace), so its network figures are its own."""
    samples = series.get("samples") or []
    if not samples:
        raise ValueError("no samples in the series")
    cpu_count = series.get("cpu_count") or len(samples[0]["machine"]["cpu"]) or 1
    cores = float(cores or cpu_count)
    m = [s["machine"] for s in samples]
    p = [s.get("procs") or {} for s in samples]
    has_procs = any(x.get("count") for x in p)

    mach_busy = _mean(sum(100.0 - c["idle"] - c["iowait"] - c.get("steal", 0.0) for c in x["cpu"]) / 100.0 for x in m)
    mach_iowait = _mean(_mean(c["iowait"] for c in x["cpu"]) for x in m)
    f = {
        "cores": cores, "cpu_count": cpu_count, "shared": shared, "samples": len(samples),
        "procs": max((x.get("count", 0) for x in p), default=0),
        "threads": max((x.get("threads", 0) for x in p), default=0),
        "proc_cores": _mean(x.get("cpu_cores", 0.0) for x in p),
        "run_threads": _mean(x.get("threads_run", 0.0) for x in p),
        "disk_wait_threads": _mean(x.get("threads_disk", 0.0) for x in p),
        "net_wait_threads": _mean(x.get("threads_net", 0.0) for x in p),
        "rss_mb": _mean(x.get("rss_mb", 0.0) for x in p),
        "majflt_s": _mean(x.get("majflt_s", 0.0) for x in p),
        "proc_disk_mb_s": _mean(x.get("read_mb_s", 0.0) + x.get("write_mb_s", 0.0) for x in p),
        "machine_busy_cores": mach_busy,
        "machine_iowait_pct": mach_iowait,
        "machine_disk_mb_s": _mean(x["disk_read_mb_s"] + x["disk_write_mb_s"] for x in m),
        "disk_iops": _mean(x["disk_read_iops"] + x["disk_write_iops"] for x in m),
        "net_mb_s": _mean(x["net_rx_mb_s"] + x["net_tx_mb_s"] + _lo(shared, own_net) * x.get("lo_mb_s", 0.0) for x in m),
        "load1": _mean(x["load1"] for x in m),
        "mem_used_pct": _mean(x["mem_used_pct"] for x in m),
        "swap_mb_s": _mean(x["swap_in_mb_s"] + x["swap_out_mb_s"] for x in m),
        "machine_majflt_s": _mean(x.get("majflt_s", 0.0) for x in m),
        "psi_mem_pct": _mean((x.get("psi") or {}).get("memory_some", 0.0) for x in m),
        "psi_io_pct": _mean((x.get("psi") or {}).get("io_some", 0.0) for x in m),
    }
    # The node's busy cores: its own processes on a shared machine, else the whole machine (which also
    # sees work the marker missed).  Thread states are always the node's own.
    if shared:
        f["busy_cores"] = f["proc_cores"]
        f["iowait_pct"] = min(100.0, 100.0 * f["disk_wait_threads"] / cores)
        f["disk_mb_s"] = f["proc_disk_mb_s"]
    else:
        f["busy_cores"] = max(f["proc_cores"], mach_busy * cores / cpu_count)
        f["iowait_pct"] = max(mach_iowait, min(100.0, 100.0 * f["disk_wait_threads"] / cores))
        f["disk_mb_s"] = max(f["machine_disk_mb_s"], f["proc_disk_mb_s"])
    f["cpu_pct"] = min(100.0, 100.0 * f["busy_cores"] / cores)
    f["net_wait_pct"] = min(100.0, 100.0 * f["net_wait_threads"] / cores)
    f["has_procs"] = has_procs
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in f.items()}


def timeline(series: dict, *, cores: float | None = None, shared: bool = False, own_net: bool = False) -> dict:
    """Per-sample CPU %, iowait %, disk MB/s and network MB/s of one node, for a plot (same rules as summarize)."""
    samples = series.get("samples") or []
    cpu_count = series.get("cpu_count") or (len(samples[0]["machine"]["cpu"]) if samples else 1)
    cores = float(cores or cpu_count)
    t0 = series.get("started_at") or (samples[0]["t"] - samples[0]["dt"] if samples else 0.0)
    out = {"t": [], "cpu_pct": [], "iowait_pct": [], "disk_mb_s": [], "net_mb_s": []}
    for s in samples:
        m, p = s["machine"], s.get("procs") or {}
        mach_busy = sum(100.0 - c["idle"] - c["iowait"] - c.get("steal", 0.0) for c in m["cpu"]) / 100.0
        mach_iowait = _mean(c["iowait"] for c in m["cpu"])
        own_iowait = min(100.0, 100.0 * p.get("threads_disk", 0.0) / cores)
        own_disk = p.get("read_mb_s", 0.0) + p.get("write_mb_s", 0.0)
        if shared:
            busy, iowait, disk = p.get("cpu_cores", 0.0), own_iowait, own_disk
        else:
            busy = max(p.get("cpu_cores", 0.0), mach_busy * cores / cpu_count)
            iowait = max(mach_iowait, own_iowait)
            disk = max(m["disk_read_mb_s"] + m["disk_write_mb_s"], own_disk)
        out["t"].append(round(s["t"] - t0, 3))
        out["cpu_pct"].append(min(100.0, 100.0 * busy / cores))
        out["iowait_pct"].append(iowait)
        out["disk_mb_s"].append(disk)
        out["net_mb_s"].append(m["net_rx_mb_s"] + m["net_tx_mb_s"] + _lo(shared, own_net) * m.get("lo_mb_s", 0.0))
    return out


def _finished(hb: dict | None) -> bool:
    if not hb or not hb.get("total"):
        return False
    return (hb.get("done", 0) + hb.get("skipped", 0) + hb.get("failed", 0)) >= hb["total"]


def classify(series: dict, *, node: str = "", cores: float | None = None, shared: bool = False,
             own_net: bool = False, heartbeat: dict | None = None, run_status: str | None = None,
             items_per_s: float | None = None) -> Verdict:
    """The verdict for one node from its sample series (and, if known, its heartbeat, the status of its part
    of the run: done / failed / running / lost / starting, and its items/s)."""
    f = summarize(series, cores=cores, shared=shared, own_net=own_net)
    f["items_per_s"] = items_per_s
    cores = f["cores"]
    busy, run = f["busy_cores"], f["run_threads"]
    demand = max(busy, run)
    cpu, iow, netw = f["cpu_pct"], f["iowait_pct"], f["net_wait_pct"]
    shared_names = tuple(k for k in SHARED_FIGURES if not (own_net and k == "net_mb_s")) if shared else ()

    def out(verdict: str, why: str, lever: str) -> Verdict:
        return Verdict(node, verdict, f"{verdict}: {why}; {lever}", f, shared_names)

    active = (demand >= ACTIVE_CORES or f["disk_wait_threads"] >= ACTIVE_CORES
              or f["net_wait_threads"] >= ACTIVE_CORES or f["proc_disk_mb_s"] >= ACTIVE_DISK_MB_S)
    if not shared and not f["has_procs"]:
        active = active or f["machine_busy_cores"] >= ACTIVE_CORES or f["machine_iowait_pct"] >= WAIT_PCT
    if not active:
        if _finished(heartbeat) or run_status in ("done", "failed"):
            hb = heartbeat or {}
            items = (f" ({hb.get('done', 0)} done, {hb.get('skipped', 0)} skipped, {hb.get('failed', 0)} failed"
                     f" of {hb['total']})" if hb.get("total") else "")
            return out(IDLE, f"run finished{items}",
                       "start the next run (invoke run) or tear the fleet down (invoke teardown)")
        if run_status == "lost":
            return out(IDLE, "the workload stopped (no heartbeat)", "read the node's log (invoke progress)")
        if not f["procs"]:
            return out(IDLE, "nothing running", "start a run (invoke run) or tear the fleet down (invoke teardown)")
        return out(IDLE, f"{f['procs']} process(es), all asleep", "check the workload's log (invoke progress)")

    # Memory: the machine swaps, is full, or stalls on memory (PSI, e.g. a memory limit makes pages thrash);
    # on a shared machine only the nodes whose own processes fault pages back in are the ones held back.
    pressure = (f["swap_mb_s"] >= SWAP_MB_S or f["mem_used_pct"] >= MEM_FULL_PCT
                or f["psi_mem_pct"] >= PSI_MEM_PCT)
    if pressure and (f["majflt_s"] >= NODE_MAJFLT_S or not shared and not f["has_procs"]):
        return out(MEMORY, f"{_num(f['majflt_s'])} major faults/s, memory stalls {f['psi_mem_pct']:.0f}%, "
                           f"swap {_num(f['swap_mb_s'])} MB/s, RSS {_num(f['rss_mb'])} MB",
                   "run fewer workers per node or smaller chunks, or pick a machine type with more memory")

    if demand >= BUSY_SHARE * cores:
        if run - busy >= STARVED_CORES:  # runnable, but the CPU went elsewhere
            why = f"CPU-starved: {_num(run)} threads runnable but CPU {cpu:.0f}% of {_num(cores)} cores"
            lever = ("the machine is shared with other nodes or work: run fewer nodes per machine, or add machines"
                     if shared else "CPU is stolen or oversubscribed: pick a machine type with dedicated cores")
            return out(COMPUTE, why, lever)
        return out(COMPUTE, f"{_num(min(demand, cores))} of {_num(cores)} cores busy (CPU {cpu:.0f}%)",
                   "add nodes or a bigger machine type, or make each item cheaper (profile it)")

    if iow >= WAIT_PCT and f["disk_wait_threads"] >= f["net_wait_threads"]:
        return out(DISK, f"CPU {cpu:.0f}%, iowait {iow:.0f}%",
                   "read inputs from local disk or memory, or use a faster disk")
    if netw >= WAIT_PCT:
        return out(NETWORK, f"CPU {cpu:.0f}%, waiting on network {netw:.0f}%, net {_num(f['net_mb_s'])} MB/s",
                   "use threads for I/O (bench shows where threads win), or copy inputs to local disk first")
    return out(UNDER, f"{_num(demand)} of {_num(cores)} cores busy (CPU {cpu:.0f}%)",
               "raise --workers or the chunk size, or find the single-threaded stage")


def fleet_line(verdicts: list[Verdict]) -> dict:
    """Total items/s, and the slowest working node with why."""
    rates = {v.node: v.figures.get("items_per_s") for v in verdicts}
    known = {n: r for n, r in rates.items() if r is not None}
    total = sum(known.values()) if known else None
    working = [v for v in verdicts if v.verdict != IDLE]
    slowest = None
    if working:
        if any(v.node in known for v in working):
            slowest = min((v for v in working if v.node in known), key=lambda v: known[v.node])
        else:  # no heartbeats: the node that gets least out of its cores
            slowest = min(working, key=lambda v: v.figures.get("cpu_pct", 0.0))
    return {
        "nodes": len(verdicts),
        "items_per_s": None if total is None else round(total, 3),
        "slowest": None if slowest is None else {
            "node": slowest.node, "items_per_s": known.get(slowest.node), "verdict": slowest.verdict,
            "lever": slowest.lever},
        "verdicts": {k: sum(1 for v in verdicts if v.verdict == k) for k in VERDICTS if any(v.verdict == k for v in verdicts)},
    }
