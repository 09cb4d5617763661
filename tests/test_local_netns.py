"""As root a local node can have its own network namespace and link: cut the link and only that node is gone."""
from __future__ import annotations

import secrets
import subprocess

import pytest
from tests.support.fleet import ROOT, fleet_processes, make_ctx

from playbooks import deploy, fleet, mount, progress, run, teardown
from playbooks.providers import local, netns
from playbooks.runs.samples import make_samples

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(180),
              pytest.mark.skipif(not ROOT, reason="network namespaces need root; CI runs this as root")]
NAME = "net" + secrets.token_hex(2)


def ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True).stdout


def test_nodes_with_their_own_link(fleet_base):
    c = make_ctx(fleet_base, local__netns=True, job__poll=0.2)
    make_samples(fleet_base / "data" / "src", 12, size=(320, 240))
    try:
        fleet.create(c, n=2, name=NAME)
        nodes = local.list_nodes(c, NAME)
        bridge = netns.read(local.fleet_dir(c, NAME))["bridge"]
        assert bridge in ip("-br", "link")
        assert all(n.host.startswith("10.213.") for n in nodes)
        assert {n.labels["netns"] for n in nodes} <= set(ip("netns", "list").split())
        mount.mount(c, name=NAME)
        deploy.deploy(c, name=NAME)
        snap = progress.wait_until_finished(c, run.start(c, NAME, nodes, "resize", "src", "out", ""))
        assert snap["done"] == 12
        cut = nodes[0].labels["link"]
        subprocess.run(["ip", "link", "set", cut, "down"], check=True)
        try:
            states = {n.name: n.state for n in local.list_nodes(c, NAME)}
            assert states == {nodes[0].name: "unreachable", nodes[1].name: "running"}
        finally:
            subprocess.run(["ip", "link", "set", cut, "up"], check=True)
        assert [n.state for n in local.wait_ready(c, NAME, 10)] == ["running", "running"]
    finally:
        teardown.teardown(c, name=NAME)
    assert fleet_processes(NAME) == []
    assert f"fb-{NAME}-" not in ip("netns", "list")
    assert bridge not in ip("-br", "link")
