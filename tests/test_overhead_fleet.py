"""`invoke overhead` on a real 2-node local fleet: real sshd nodes, the sampler sent over SSH by the fan-out.

Node 0 runs one CPU-burning process (started through its own sshd, so it carries FLEETBOOK_NODE); node 1 runs
nothing.  With local.cores_per_node=1 node 0 is compute-bound, with 2 it is under-used; node 1 is idle.
As root, node 1 then runs a workload held back by a real kernel limit: a dd in a blkio cgroup throttled to
4 MB/s (disk-bound), and a client reading through a veth shaped by `tc tbf` to 8 mbit/s (network-bound; local
nodes share the loopback link, so the slow link is a network namespace the node's process talks to).
Each sampling takes 2 s.
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.support.fleet import invoke_cli, make_ctx
from PIL import Image

from playbooks import fleet, overhead
from playbooks.ssh import fanout as remote
from playbooks.measure.verdicts import COMPUTE, DISK, IDLE, NETWORK, UNDER
from playbooks.providers import local

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(240)]
NAME = "ov" + secrets.token_hex(2)


@pytest.fixture(scope="module")
def ctx(fleet_base):
    c = make_ctx(fleet_base)
    fleet.create(c, n=2, name=NAME)
    yield c
    fleet.down(c, name=NAME)


def start_on(c, node, command: str) -> int:
    """Start ``command`` on ``node`` over SSH like a workload (detached, own session); its pid."""
    line = f"setsid nohup {command} > /dev/null 2>&1 < /dev/null & echo $!"
    [r] = remote.fan_out(c, NAME, [node], lambda conn, n: int(remote.run_checked(conn, line, 20).split()[-1]),
                         step="start")
    assert r.ok, r.error
    return r.value


def kill_on(c, node, pid: int) -> None:
    remote.fan_out(c, NAME, [node], lambda conn, n: remote.run_checked(conn, f"kill {pid} || true", 20), step="stop")


@pytest.fixture(scope="module")
def burner(ctx):
    """One CPU burner on node 0."""
    n0 = local.list_nodes(ctx, NAME)[0]
    pid = start_on(ctx, n0, f"{shlex.quote(n0.python)} -c 'while True: pass'")
    yield n0
    kill_on(ctx, n0, pid)


def run_overhead(c, capsys, **kw) -> dict:
    overhead.overhead(c, seconds=2, json_=True, name=NAME, **kw)
    return json.loads(capsys.readouterr().out)


def test_busy_node_is_compute_bound_and_the_other_idle(ctx, burner, capsys, tmp_path):
    png = tmp_path / "fleet.png"
    data = run_overhead(ctx, capsys, plot=str(png))
    n0, n1 = (n.name for n in local.list_nodes(ctx, NAME))
    assert data["shared_machine"] is True and data["cores_per_node"] == 1
    assert data["nodes"][n0]["verdict"] == COMPUTE, data["nodes"][n0]
    assert data["nodes"][n1]["verdict"] == IDLE, data["nodes"][n1]
    assert data["nodes"][n0]["procs"] >= 1
    with Image.open(png) as img:
        img.load()
        assert img.format == "PNG"


def test_one_busy_process_on_a_two_core_node_is_under_used(fleet_base, burner, capsys):
    c2 = make_ctx(fleet_base, local__cores_per_node=2)
    data = run_overhead(c2, capsys)
    n0 = burner.name
    assert data["cores_per_node"] == 2
    assert data["nodes"][n0]["verdict"] == UNDER, data["nodes"][n0]
    assert "of 2 cores busy" in data["nodes"][n0]["lever"]


def test_cli(fleet_base, ctx):
    listing = invoke_cli(fleet_base, "--list")
    if " overhead " not in listing.stdout:
        pytest.skip("tasks.py does not list `overhead` yet")
    r = invoke_cli(fleet_base, "overhead", "--seconds", "1", "--name", NAME, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert all({"verdict", "lever"} <= set(v) for v in data["nodes"].values())
    bad = invoke_cli(fleet_base, "overhead", "--seconds", "0", "--name", NAME)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "--seconds must be" in bad.stderr


# ---------------------------------------------------------------------------------------------- root only
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="cgroup throttles and network namespaces need root")
BLKIO = Path("/sys/fs/cgroup/blkio")


@needs_root
def test_a_throttled_disk_is_disk_bound(ctx, capsys):
    if not (BLKIO / "blkio.throttle.write_bps_device").exists():
        pytest.skip("no cgroup v1 blkio throttle on this machine")
    n1 = local.list_nodes(ctx, NAME)[1]
    disk = os.stat(n1.workdir.rsplit("/", 1)[0]).st_dev
    if os.major(disk) == 0:
        pytest.skip("the node's home is not on a block device")
    cg = BLKIO / f"fb-{NAME}"
    cg.mkdir()
    try:
        (cg / "blkio.throttle.write_bps_device").write_text(f"{os.major(disk)}:{os.minor(disk)} {4 << 20}\n")
        pid = start_on(ctx, n1, "dd if=/dev/zero of=dd.dat bs=256k count=100000 oflag=direct status=none")
        try:
            (cg / "cgroup.procs").write_text(str(pid))
            data = run_overhead(ctx, capsys)
        finally:
            kill_on(ctx, n1, pid)
    finally:
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    node = data["nodes"][n1.name]
    assert node["verdict"] == DISK, node
    assert "read inputs from local disk or memory, or use a faster disk" in node["lever"]


NET_SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("{addr}", 9999)); s.listen()
c, _ = s.accept(); block = b"x" * 65536
while True: c.sendall(block)
"""
NET_CLIENT = ("import socket,zlib; c = socket.create_connection(('{addr}', 9999))\n"
              "while True:\n    d = c.recv(65536)\n    if not d: break\n    zlib.crc32(d)")


@pytest.fixture
def slow_link():
    """A network namespace behind a veth pair whose far end sends at most 8 mbit/s (tc tbf)."""
    ns, here, there = f"fb{NAME}", f"fb{NAME}a", f"fb{NAME}b"
    sh = lambda cmd: subprocess.run(cmd, shell=True, check=True, capture_output=True)  # noqa: E731
    try:
        for cmd in (f"ip netns add {ns}", f"ip link add {here} type veth peer name {there}",
                    f"ip link set {there} netns {ns}", f"ip addr add 10.231.7.1/30 dev {here}",
                    f"ip link set {here} up", f"ip netns exec {ns} ip addr add 10.231.7.2/30 dev {there}",
                    f"ip netns exec {ns} ip link set {there} up",
                    f"ip netns exec {ns} tc qdisc add dev {there} root tbf rate 8mbit burst 32kb latency 100ms"):
            sh(cmd)
    except subprocess.CalledProcessError as exc:
        subprocess.run(f"ip netns del {ns}; ip link del {here}", shell=True, capture_output=True)
        pytest.skip(f"cannot build a shaped link here: {exc.stderr.decode().strip()}")
    server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", NET_SERVER.format(addr="10.231.7.2")],
                              stdin=subprocess.DEVNULL)
    yield "10.231.7.2"
    server.kill()
    server.wait(timeout=10)
    subprocess.run(f"ip netns del {ns}; ip link del {here}", shell=True, capture_output=True)


@needs_root
def test_a_slow_link_is_network_bound(ctx, capsys, slow_link):
    n1 = local.list_nodes(ctx, NAME)[1]
    time.sleep(0.3)  # the server listens
    pid = start_on(ctx, n1, f"{shlex.quote(n1.python)} -c {shlex.quote(NET_CLIENT.format(addr=slow_link))}")
    try:
        time.sleep(0.5)
        data = run_overhead(ctx, capsys)
    finally:
        kill_on(ctx, n1, pid)
    node = data["nodes"][n1.name]
    assert node["verdict"] == NETWORK, node
    assert "use threads for I/O" in node["lever"]
