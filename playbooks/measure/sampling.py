"""Sample what one node is doing, once per second, and print the series as one JSON object.

This file runs ON a node (sent over SSH by ``invoke overhead``), so it uses only the standard library and
psutil.  It also runs standalone::

    python playbooks/measure/sampling.py --seconds 2 --match FLEETBOOK_NODE=demo/fb-demo-0

Each sample holds two kinds of figures:

``machine``  machine-wide: CPU user/system/iowait/idle per core, load, memory and swap, disk MB/s and IOPS,
             network MB/s.  On a cloud node these are the node's own; on a local fleet every node shares them.
``procs``    the node's own workload processes, selected by an environment marker (``--match KEY=VALUE``)
             and/or a Unix user (``--user``): CPU cores used, RSS, block I/O, major faults, and what their
             threads were doing, sampled ``--hz`` times a second from ``/proc/<pid>/task/*``: running
             (or runnable), waiting on disk, waiting on the network, or otherwise asleep.

The sampler leaves out itself, its ancestors (the SSH session) and sshd.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

try:
    import psutil
except ImportError as exc:  # pragma: no cover - a node without psutil
    print(json.dumps({"error": f"psutil is not installed on this node ({exc}); add it to the node image"}))
    sys.exit(2)

SAMPLER_VERSION = 1
MB = 1024 * 1024
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "sshfs", "fuse.gcsfuse", "fuse.s3fs",
              "fuse.rclone", "fuse.goofys", "fuse.mountpoint-s3", "9p", "ceph", "glusterfs", "lustre")
# Kernel wait channels (/proc/<pid>/task/<tid>/wchan) that mean "waiting on the network" for sure...
NET_WCHAN = ("sk_wait", "inet_csk", "tcp_", "udp_", "request_wait_answer", "fuse_", "nfs", "rpc_", "sunrpc")
# ... and those that mean it only when the process has an internet socket or a network file open and did
# something in that second (an idle server waiting on its socket is not network-bound, it is idle).
MAYBE_NET_WCHAN = ("wait_woken", "poll", "select", "epoll", "sock_", "unix_stream")
# Plumbing of the node (its mount, SSH sessions): their CPU counts, but their waiting is not the workload's.
PLUMBING = ("ssh", "sshfs", "sshd", "sshd-session", "sftp-server", "fusermount", "fusermount3")
MAX_THREADS = 128  # threads looked at per process and tick


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="how long to sample (default 10)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds per sample (default 1)")
    p.add_argument("--hz", type=int, default=10, help="thread-state looks per second (default 10)")
    p.add_argument("--match", action="append", default=[], metavar="KEY=VALUE",
                   help="select processes whose environment has KEY=VALUE (repeatable: any matches)")
    p.add_argument("--user", action="append", default=[], help="select processes of this Unix user (repeatable)")
    args = p.parse_args(argv)
    for m in args.match:
        if "=" not in m:
            p.error(f"--match wants KEY=VALUE, got {m!r}")
    if args.seconds <= 0 or args.interval <= 0 or args.hz < 1:
        p.error("--seconds and --interval must be > 0, --hz >= 1")
    return args


# ----------------------------------------------------------------------------------------------- processes
def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid > 1:
        out.add(pid)
        try:
            pid = psutil.Process(pid).ppid()
        except psutil.Error:
            break
    return out


def _network_mounts() -> list[str]:
    try:
        parts = psutil.disk_partitions(all=True)
    except Exception:  # noqa: BLE001 - a restricted /proc
        return []
    return sorted((p.mountpoint for p in parts if p.fstype in NETWORK_FS), key=len, reverse=True)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _stat_fields(path: str) -> list[str]:
    """Fields of a /proc stat file after the command name: [0] is the state, [9] majflt."""
    text = _read(path)
    i = text.rfind(")")
    return text[i + 2:].split() if i > 0 else []


class Selector:
    """Finds the node's processes and remembers each decision by (pid, create time)."""

    def __init__(self, match: list[str], users: list[str]):
        self.match = [tuple(m.split("=", 1)) for m in match]
        self.users = set(users)
        self.skip = _ancestors()
        self.decided: dict[tuple[int, float], bool] = {}

    def wanted(self, p: psutil.Process) -> bool:
        key = (p.pid, p.info.get("create_time") or 0.0)
        if key in self.decided:
            return self.decided[key]
        ok = False
        name = p.info.get("name") or ""
        if p.pid not in self.skip and not name.startswith("sshd"):
            if self.users and p.info.get("username") in self.users:
                ok = True
            elif self.match:
                try:
                    env = p.environ()
                    ok = any(env.get(k) == v for k, v in self.match)
                except (psutil.Error, OSError):
                    ok = False
        self.decided[key] = ok
        return ok

    def scan(self) -> dict[int, psutil.Process]:
        if not self.match and not self.users:
            return {}
        found = {}
        for p in psutil.process_iter(["name", "username", "create_time"]):
            if self.wanted(p):
                found[p.pid] = p
        return found


def _thread_state(pid: int, tid: str, netty: bool, plumbing: bool) -> str:
    """'run', 'disk', 'net', 'maybe_net' or 'other' for one thread right now ('gone' if it ended)."""
    f = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
    if not f:
        return "gone"
    state = f[0]
    if state == "R":
        return "run"
    if plumbing:
        return "other"
    wchan = _read(f"/proc/{pid}/task/{tid}/wchan")
    if any(w in wchan for w in NET_WCHAN):
        return "net"
    if netty and any(w in wchan for w in MAYBE_NET_WCHAN):
        return "maybe_net"
    if state == "D":
        return "disk"
    return "other"


def _threads(pid: int) -> list[str]:
    try:
        return sorted(os.listdir(f"/proc/{pid}/task"))[:MAX_THREADS]
    except OSError:
        return []


# ----------------------------------------------------------------------------------------------- machine
def _machine_counters() -> dict:
    disk = psutil.disk_io_counters(perdisk=False)
    nics = psutil.net_io_counters(pernic=True) or {}
    net = [0, 0]
    lo = 0
    for name, n in nics.items():
        if name == "lo":
            lo += n.bytes_recv
        else:
            net[0] += n.bytes_recv
            net[1] += n.bytes_sent
    swap = psutil.swap_memory()
    vmstat = _read("/proc/vmstat")
    majflt = 0
    for line in vmstat.splitlines():
        if line.startswith("pgmajfault "):
            majflt = int(line.split()[1])
    psi = {}
    for res in ("cpu", "io", "memory"):  # pressure stall information (Linux >= 4.20): microseconds stalled
        for line in _read(f"/proc/pressure/{res}").splitlines():
            kind, _, rest = line.partition(" ")
            total = [w for w in rest.split() if w.startswith("total=")]
            if total:
                psi[f"{res}_{kind}"] = int(total[0][6:])
    return {
        "psi": psi,
        "disk": (disk.read_bytes, disk.write_bytes, disk.read_count, disk.write_count) if disk else (0, 0, 0, 0),
        "net": tuple(net), "lo": lo, "swap": (swap.sin, swap.sout), "majflt": majflt,
    }


def _machine_sample(prev: dict, now: dict, dt: float) -> dict:
    per_core = []
    for c in psutil.cpu_times_percent(percpu=True):
        d = c._asdict()
        per_core.append({
            "user": round(d.get("user", 0.0) + d.get("nice", 0.0), 1),
            "system": round(d.get("system", 0.0) + d.get("irq", 0.0) + d.get("softirq", 0.0), 1),
            "iowait": round(d.get("iowait", 0.0), 1),
            "steal": round(d.get("steal", 0.0), 1),
            "idle": round(d.get("idle", 0.0), 1),
        })
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    rate = lambda a, b, unit=MB: round(max(b - a, 0) / unit / dt, 3)  # noqa: E731
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return {
        "cpu": per_core,
        "load1": round(load1, 2),
        "mem_used_pct": round(100.0 * (vm.total - vm.available) / vm.total, 1),
        "mem_available_mb": round(vm.available / MB, 1),
        "swap_used_pct": round(sw.percent, 1),
        "swap_in_mb_s": rate(prev["swap"][0], now["swap"][0]),
        "swap_out_mb_s": rate(prev["swap"][1], now["swap"][1]),
        "majflt_s": rate(prev["majflt"], now["majflt"], 1),
        "disk_read_mb_s": rate(prev["disk"][0], now["disk"][0]),
        "disk_write_mb_s": rate(prev["disk"][1], now["disk"][1]),
        "disk_read_iops": rate(prev["disk"][2], now["disk"][2], 1),
        "disk_write_iops": rate(prev["disk"][3], now["disk"][3], 1),
        "net_rx_mb_s": rate(prev["net"][0], now["net"][0]),
        "net_tx_mb_s": rate(prev["net"][1], now["net"][1]),
        "lo_mb_s": rate(prev["lo"], now["lo"]),
        # % of the interval in which some (or all) runnable tasks stalled on that resource
        "psi": {k: round(min(100.0, max(0, v - prev["psi"].get(k, v)) / 1e4 / dt), 1) for k, v in now["psi"].items()},
    }


# ----------------------------------------------------------------------------------------------- process figures
def _proc_counters(p: psutil.Process) -> dict | None:
    try:
        with p.oneshot():
            ct = p.cpu_times()
            mem = p.memory_info()
            try:
                io = p.io_counters()
                io_t = (io.read_bytes, io.write_bytes, getattr(io, "read_chars", 0), getattr(io, "write_chars", 0))
            except (psutil.AccessDenied, AttributeError):
                io_t = (0, 0, 0, 0)
            name = p.name()
            ctx = p.num_ctx_switches().voluntary
    except psutil.Error:
        return None
    f = _stat_fields(f"/proc/{p.pid}/stat")
    majflt = int(f[9]) if len(f) > 9 else 0
    return {"cpu": (ct.user, ct.system), "rss": mem.rss, "io": io_t, "majflt": majflt, "name": name, "ctx": ctx}


def _net_endpoints(p: psutil.Process, net_mounts: list[str]) -> tuple[int, int]:
    """(internet sockets, open files on a network filesystem) of one process."""
    conns = files = 0
    try:
        get = getattr(p, "net_connections", None) or p.connections
        conns = sum(1 for c in get(kind="inet") if c.status in ("ESTABLISHED", "NONE", "SYN_SENT"))
    except (psutil.Error, OSError):
        pass
    if net_mounts:
        try:
            files = sum(1 for f in p.open_files() if any(f.path.startswith(m.rstrip("/") + "/") for m in net_mounts))
        except (psutil.Error, OSError):
            pass
    return conns, files


def sample(args) -> dict:
    sel = Selector(args.match, args.user)
    net_mounts = _network_mounts()
    interval, ticks = args.interval, max(1, int(round(args.interval * args.hz)))
    n_samples = max(1, int(round(args.seconds / interval)))
    psutil.cpu_times_percent(percpu=True)  # primes the per-core percentages
    t_prev = time.time()
    mach_prev = _machine_counters()
    procs = sel.scan()
    prev = {pid: c for pid, p in procs.items() if (c := _proc_counters(p))}
    out = {
        "sampler": SAMPLER_VERSION, "host": socket.gethostname(), "pid": os.getpid(),
        "cpu_count": psutil.cpu_count() or 1, "interval": interval, "hz": args.hz,
        "match": {"env": args.match, "user": args.user},
        "mem_total_mb": round(psutil.virtual_memory().total / MB, 1),
        "swap_total_mb": round(psutil.swap_memory().total / MB, 1),
        "network_mounts": net_mounts, "started_at": round(t_prev, 3), "samples": [],
    }
    for i in range(n_samples):
        start = t_prev
        # which processes are "netty" (have a socket or a network file open) decides what poll waits mean
        netty, netfiles, conns, nfiles = {}, {}, 0, 0
        for pid, p in procs.items():
            c_, f_ = _net_endpoints(p, net_mounts)
            conns, nfiles = conns + c_, nfiles + f_
            netty[pid], netfiles[pid] = bool(c_ or f_), f_
        counts = {pid: {"run": 0, "disk": 0, "net": 0, "maybe_net": 0, "other": 0} for pid in procs}
        plumbing = {pid: (prev.get(pid) or {}).get("name", "") in PLUMBING for pid in procs}
        looks = 0
        for k in range(ticks):
            time.sleep(max(0.0, start + (k + 0.5) * interval / ticks - time.time()))
            for pid in procs:
                for tid in _threads(pid):
                    st = _thread_state(pid, tid, netty.get(pid, False), plumbing[pid])
                    if st != "gone":
                        counts[pid][st] += 1
            looks += 1
        time.sleep(max(0.0, start + interval - time.time()))
        t_now = time.time()
        dt = max(t_now - t_prev, 1e-3)
        mach_now = _machine_counters()
        machine = _machine_sample(mach_prev, mach_now, dt)
        # processes: new ones started during the interval count from zero
        current = sel.scan()
        now = {pid: c for pid, p in current.items() if (c := _proc_counters(p))}
        cpu_u = cpu_s = rss = majflt = 0.0
        io = [0.0, 0.0, 0.0, 0.0]
        names: dict[str, int] = {}
        nthreads = ctx_total = 0
        states = {"run": 0, "disk": 0, "net": 0, "other": 0}
        for pid, c in now.items():
            base = prev.get(pid)
            if base is None:
                created = current[pid].info.get("create_time") or 0.0
                base = ({"cpu": (0.0, 0.0), "io": (0, 0, 0, 0), "majflt": 0, "ctx": 0}
                        if created >= t_prev - 0.05 else c)
            d_cpu = max(c["cpu"][0] - base["cpu"][0], 0.0) + max(c["cpu"][1] - base["cpu"][1], 0.0)
            d_chars = max(c["io"][2] - base["io"][2], 0) + max(c["io"][3] - base["io"][3], 0)
            d_ctx = max(c["ctx"] - base["ctx"], 0)
            ctx_total += d_ctx
            if pid in counts:
                k = counts[pid]
                # did something this second (ran, read or wrote, or woke up a few times): its socket waits are
                # real waits on the network, not an idle server waiting for work
                busy = d_cpu >= 0.005 or d_chars > 0 or d_ctx >= 5 * dt
                # Waiting in D on a file of a network filesystem (sshfs, NFS) looks like waiting on a disk
                # (the page cache waits for the read either way): without block I/O of its own in that
                # second, a process with such a file open waits on the network.
                d_block = max(c["io"][0] - base["io"][0], 0) + max(c["io"][1] - base["io"][1], 0)
                on_net = netfiles.get(pid, 0) > 0 and d_block < 64 * 1024
                states["run"] += k["run"]
                states["disk"] += 0 if on_net else k["disk"]
                states["net"] += k["net"] + (k["disk"] if on_net else 0) + (k["maybe_net"] if busy else 0)
                states["other"] += k["other"] + (0 if busy else k["maybe_net"])
            cpu_u += max(c["cpu"][0] - base["cpu"][0], 0.0)
            cpu_s += max(c["cpu"][1] - base["cpu"][1], 0.0)
            majflt += max(c["majflt"] - base["majflt"], 0)
            for j in range(4):
                io[j] += max(c["io"][j] - base["io"][j], 0)
            rss += c["rss"]
            names[c["name"]] = names.get(c["name"], 0) + 1
            nthreads += len(_threads(pid))
        out["samples"].append({
            "t": round(t_now, 3), "dt": round(dt, 3),
            "machine": machine,
            "procs": {
                "count": len(now), "threads": nthreads, "names": names,
                "cpu_cores": round((cpu_u + cpu_s) / dt, 3),
                "user_cores": round(cpu_u / dt, 3), "system_cores": round(cpu_s / dt, 3),
                "rss_mb": round(rss / MB, 1),
                "majflt_s": round(majflt / dt, 1),
                "read_mb_s": round(io[0] / MB / dt, 3), "write_mb_s": round(io[1] / MB / dt, 3),
                "rchar_mb_s": round(io[2] / MB / dt, 3), "wchar_mb_s": round(io[3] / MB / dt, 3),
                "threads_run": round(states["run"] / looks, 3),
                "threads_disk": round(states["disk"] / looks, 3),
                "threads_net": round(states["net"] / looks, 3),
                "threads_other": round(states["other"] / looks, 3),
                "wakeups_s": round(ctx_total / dt, 1),
                "inet_sockets": conns, "network_files": nfiles,
            },
        })
        t_prev, mach_prev, procs, prev = t_now, mach_now, current, now
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    json.dump(sample(args), sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
