"""`invoke overhead` on a local node with its own link (local.netns, root): reading inputs over a slow link.

The node reads a file of the shared disk through its sshfs mount while its link is shaped with `tc tbf` to
8 mbit/s.  The reader's thread sleeps in the kernel exactly as it would on a slow disk (state D, waiting for the
page), so this checks that the sampler tells the two apart (the file is on sshfs, no block I/O of its own) and
that the node's network figure is its own link's, not the machine's.
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import time

import pytest
from tests.support.fleet import make_ctx

from playbooks import fleet, mount, overhead, teardown
from playbooks.ssh import fanout as remote
from playbooks.measure.verdicts import NETWORK
from playbooks.providers import local

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(240),
              pytest.mark.skipif(os.geteuid() != 0, reason="local.netns needs root")]
NAME = "ovn" + secrets.token_hex(2)
READER = """
import zlib
with open({path!r}, "rb") as f:
    while True:
        block = f.read(1 << 16)
        if not block:
            break
        zlib.crc32(block)
"""


@pytest.fixture(scope="module")
def node(fleet_base):
    c = make_ctx(fleet_base, local__netns=True)
    (fleet_base / "data").mkdir(parents=True, exist_ok=True)
    (fleet_base / "data" / "inputs.bin").write_bytes(os.urandom(16 << 20))
    try:
        fleet.create(c, n=1, name=NAME)
        mount.mount(c, name=NAME)
        [n] = local.list_nodes(c, NAME)
        yield c, n
    finally:
        teardown.teardown(c, name=NAME)


def test_reading_inputs_over_a_slow_link_is_network_bound(node, capsys):
    c, n = node
    link = n.labels.get("link")
    assert link, "a local.netns node names its link in its labels"
    shape = subprocess.run(["tc", "qdisc", "add", "dev", link, "root", "tbf", "rate", "8mbit", "burst", "32kb",
                            "latency", "100ms"], capture_output=True, text=True)
    if shape.returncode != 0:
        pytest.skip(f"cannot shape the node's link: {shape.stderr.strip()}")
    code = READER.format(path=f"{n.mountpoint}/inputs.bin")
    line = f"setsid nohup {shlex.quote(n.python)} -c {shlex.quote(code)} > /dev/null 2>&1 < /dev/null & echo $!"
    [r] = remote.fan_out(c, NAME, [n], lambda conn, x: int(remote.run_checked(conn, line, 20).split()[-1]),
                         step="start")
    assert r.ok, r.error
    try:
        time.sleep(0.5)
        overhead.overhead(c, seconds=2, json_=True, name=NAME)
    finally:
        remote.fan_out(c, NAME, [n], lambda conn, x: remote.run_checked(conn, f"kill {r.value} || true", 20),
                       step="stop")
    data = json.loads(capsys.readouterr().out)
    got = data["nodes"][n.name]
    assert got["verdict"] == NETWORK, got
    assert got["iowait_pct"] < 20
    assert 0.3 < got["net_mb_s"] < 3  # its own link at ~1 MB/s, not the machine's loopback
    assert "net_mb_s" not in got["shared"]
