"""Record the sample series that tests/test_overhead_verdict.py classifies (run as root, ~25 s, one at a time).

    .venv/bin/python tests/data/overhead/record.py [scenario ...]

Each scenario starts a real workload carrying ``FLEETBOOK_NODE=rec/<scenario>``, runs the real sampler
(``playbooks/measure/sampling.py --seconds 3``) against that marker, stops the workload, and writes
``<scenario>.json`` = ``{"meta": {expected verdict, cores, shared, heartbeat, how}, "series": <sampler output>}``.
Limits come from the kernel, as a slow disk/link/small machine would impose them: a blkio cgroup throttle
(disk), ``tc tbf`` on a veth pair into a network namespace (network), a memory cgroup limit (memory).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SAMPLER = REPO / "playbooks" / "measure" / "sampling.py"
PY = sys.executable
SECONDS = 3
CG_BLKIO = Path("/sys/fs/cgroup/blkio/fbov")
CG_MEM_PARENT = Path("/sys/fs/cgroup/memory") / next(
    (ln.split(":", 2)[2].lstrip("/") for ln in Path("/proc/self/cgroup").read_text().splitlines()
     if ln.split(":")[1] == "memory"), "")
CG_MEM = CG_MEM_PARENT / "fbov"
SCRATCH = Path("/tmp/fbov")

BURN = "while True: pass"
SLEEP = "import time; time.sleep(60)"
NET_SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("10.231.0.2", 9999)); s.listen()
c, _ = s.accept(); block = b"x" * 65536
while True: c.sendall(block)
"""
NET_CLIENT = """
import socket, zlib
c = socket.create_connection(("10.231.0.2", 9999))
while True:
    data = c.recv(65536)
    if not data: break
    zlib.crc32(data)
"""
MEM_TOUCH = """
import mmap, os, sys
f = open(sys.argv[1], "rb"); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
n = len(m); total = 0
while True:
    for off in range(0, n, 4096): total += m[off]
"""


def sh(cmd: str, check=True):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def start(code: str, scenario: str, *args, cgroups=(), netns: str = "") -> subprocess.Popen:
    env = dict(os.environ, FLEETBOOK_NODE=f"rec/{scenario}")
    join = "".join(f"echo $$ > {cg}/cgroup.procs; " for cg in cgroups)
    argv = ["sh", "-c", f'{join}exec "$@"', "sh"]
    if netns:
        argv += ["ip", "netns", "exec", netns]
    argv += [PY, "-c", code, *args]
    return subprocess.Popen(argv, env=env, cwd="/tmp", stdin=subprocess.DEVNULL)


def stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait(timeout=10)


def sample(scenario: str) -> dict:
    out = subprocess.run([PY, str(SAMPLER), "--seconds", str(SECONDS), "--match", f"FLEETBOOK_NODE=rec/{scenario}"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def save(scenario: str, verdict: str, series: dict, how: str, cores=1, shared=True, heartbeat=None) -> None:
    meta = {"verdict": verdict, "cores": cores, "shared": shared, "heartbeat": heartbeat, "how": how,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (HERE / f"{scenario}.json").write_text(json.dumps({"meta": meta, "series": series}, indent=1) + "\n")
    print(f"{scenario}: {len(series['samples'])} samples -> {scenario}.json")


# ------------------------------------------------------------------------------------------------ scenarios
def compute():
    p = start(BURN, "compute")
    try:
        time.sleep(0.5)
        s = sample("compute")
    finally:
        stop(p)
    save("compute", "compute-bound", s, "one CPU-burning python process; the node counts 1 core")


def under_used():
    p = start(BURN, "under_used")
    try:
        time.sleep(0.5)
        s = sample("under_used")
    finally:
        stop(p)
    save("under_used", "under-used", s, "one CPU-burning python process (a single-threaded stage); the node counts 2 cores",
         cores=2)


def idle():
    save("idle", "idle", sample("idle"), "no process carries the marker")


def idle_finished():
    p = start(SLEEP, "idle_finished")
    try:
        time.sleep(0.5)
        s = sample("idle_finished")
    finally:
        stop(p)
    now = time.time()
    hb = {"node": "rec-0", "pid": p.pid, "host": "rec", "total": 500, "done": 480, "skipped": 20, "failed": 0,
          "rate_per_s": 0.0, "started_at": now - 120, "updated_at": now - 5}
    save("idle_finished", "idle", s, "one sleeping process with the marker; its heartbeat says the run is done",
         heartbeat=hb)


def disk():
    SCRATCH.mkdir(exist_ok=True)
    CG_BLKIO.mkdir(exist_ok=True)
    dev = Path("/sys/block/vda/dev").read_text().strip()
    (CG_BLKIO / "blkio.throttle.write_bps_device").write_text(f"{dev} {4 * 1024 * 1024}\n")
    env = dict(os.environ, FLEETBOOK_NODE="rec/disk")
    p = subprocess.Popen(["sh", "-c", f"echo $$ > {CG_BLKIO}/cgroup.procs; exec dd if=/dev/zero "
                          f"of={SCRATCH}/disk.dat bs=256k count=100000 oflag=direct status=none"],
                         env=env, stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        s = sample("disk")
    finally:
        stop(p)
        (SCRATCH / "disk.dat").unlink(missing_ok=True)
        CG_BLKIO.rmdir()
    save("disk", "disk-bound", s, "dd writing with O_DIRECT in a blkio cgroup throttled to 4 MB/s on vda")


def network():
    sh("ip netns del fbov", check=False)
    sh("ip link del fbov0", check=False)
    for cmd in ("ip netns add fbov", "ip link add fbov0 type veth peer name fbov1", "ip link set fbov1 netns fbov",
                "ip addr add 10.231.0.1/30 dev fbov0", "ip link set fbov0 up",
                "ip netns exec fbov ip addr add 10.231.0.2/30 dev fbov1", "ip netns exec fbov ip link set fbov1 up",
                "ip netns exec fbov ip link set lo up",
                "ip netns exec fbov tc qdisc add dev fbov1 root tbf rate 8mbit burst 32kb latency 100ms"):
        sh(cmd)
    server = subprocess.Popen(["ip", "netns", "exec", "fbov", PY, "-c", NET_SERVER], stdin=subprocess.DEVNULL)
    client = None
    try:
        time.sleep(0.5)
        client = start(NET_CLIENT, "network")
        time.sleep(0.5)
        s = sample("network")
    finally:
        stop(*(p for p in (client, server) if p))
        sh("ip netns del fbov", check=False)
        sh("ip link del fbov0", check=False)
    save("network", "network-bound", s, "a client reading a TCP stream through a veth shaped with tc tbf to 8 mbit/s")


def memory():
    SCRATCH.mkdir(exist_ok=True)
    data = SCRATCH / "mem.dat"
    sh(f"dd if=/dev/urandom of={data} bs=1M count=160 oflag=direct status=none")
    fd = os.open(data, os.O_RDONLY)  # no page of it cached (charged) outside the limited cgroup
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    CG_MEM.mkdir(exist_ok=True)
    (CG_MEM / "memory.limit_in_bytes").write_text(str(96 * 1024 * 1024))
    p = start(MEM_TOUCH, "memory", str(data), cgroups=(CG_MEM,))
    try:
        time.sleep(1.0)
        s = sample("memory")
    finally:
        stop(p)
        data.unlink(missing_ok=True)
        time.sleep(0.2)
        CG_MEM.rmdir()
    save("memory", "memory-bound", s, "a process cycling through a 160 MB mmap'd file in a 96 MB memory cgroup "
         "(pages thrash: major faults, memory stalls)")


SCENARIOS = {"compute": compute, "under_used": under_used, "idle": idle, "idle_finished": idle_finished,
             "disk": disk, "network": network, "memory": memory}

if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("record.py needs root (cgroups, network namespaces)")
    for name in sys.argv[1:] or SCENARIOS:
        SCENARIOS[name]()
