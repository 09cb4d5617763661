"""Issue 13 item 4 with a real link cut: a node in its own network namespace loses its link for longer than sshfs's
keep-alive window (5 s x 3), so the requests sshfs had in flight when its ssh gave up fail with EIO while it
reconnects; the workload waits for the mount instead of giving up (on the landed code it ended with exit 3), and
the run ends complete with not one item recorded as failed.  Which request gets the EIO depends on timing (often
the log's or a heartbeat's write, sometimes an item's): the EIO of an item is covered for sure by
tests/test_mount_heal.py with a fake mount error; this test checks the outcome with the real sshfs."""
from __future__ import annotations

import secrets
import subprocess
import time

import pytest
from tests.support.fleet import ROOT, check_resized, make_ctx, outputs

from playbooks import deploy, fleet, mount, progress, run, teardown
from playbooks.providers import local
from playbooks.runs import state as runstate
from playbooks.runs.samples import make_samples

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(240),
              pytest.mark.skipif(not ROOT, reason="network namespaces need root; CI runs this as root")]
NAME = "cut" + secrets.token_hex(2)
IMAGES = 80
CUT_S = 20.0            # longer than ServerAliveInterval=5 x ServerAliveCountMax=3


def test_a_link_cut_longer_than_the_keepalive_window_is_ridden_out(fleet_base):
    c = make_ctx(fleet_base, local__netns=True, job__poll=0.5, job__lost_after=90.0, job__item_delay=0.05,
                 job__mount_wait=90.0, local__cores_per_node=2)
    make_samples(fleet_base / "data" / "src", IMAGES, size=(160, 120))
    try:
        fleet.create(c, n=1, name=NAME)
        mount.mount(c, name=NAME)
        deploy.deploy(c, name=NAME)
        [node] = local.list_nodes(c, NAME)
        record = run.start(c, NAME, [node], "resize", "src", "out", "--size 64")
        deadline = time.monotonic() + 60
        while len(outputs(c)) < 5:
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.1)
        cut = node.labels["link"]
        subprocess.run(["ip", "link", "set", cut, "down"], check=True)
        try:
            time.sleep(CUT_S)
        finally:
            subprocess.run(["ip", "link", "set", cut, "up"], check=True)
        snap = progress.wait_until_finished(c, record)
        assert snap["done"] == IMAGES and snap["failed"] == 0
        check_resized(c, size=64)
        _, exit_ = runstate.node_files(c, record["run_id"], node.name)
        assert exit_["code"] == 0 and exit_["summary"]["failed"] == 0
        # the workload's exit file comes before the node's shell copies its whole local log over the shared one
        # (whose tee copy lost what the cut broke): wait for that copy
        path = fleet_base / "data" / runstate.node_state_rel(record["run_id"], node.name) / "log.txt"
        deadline = time.monotonic() + 30
        while "done=" not in (log := path.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "Input/output error" in log, log                  # the cut did break requests of this node
        rode = exit_["summary"].get("mount_recoveries", 0)
        if rode:                                                  # an item's request was one of them
            assert "mount lost: Input/output error" in log and "the mount answers again" in log, log
        assert "Traceback" not in log, log
        print(f"\nLINK CUT {CUT_S:.0f} s: the workload rode out {rode} mount loss(es), "
              f"{exit_['summary'].get('mount_wait_s', 0)} s of waiting")
    finally:
        teardown.teardown(c, name=NAME)
