"""The whole runbook on a real 3-node local fleet: real sshd daemons, real sshfs mounts, real workloads."""
from __future__ import annotations

import getpass
import json
import os
import secrets
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
from tests.support.fleet import (ROOT, bring_up, check_resized, cmdline, fleet_processes, invoke_cli, outputs,
                                 sampled_ctx)
from invoke.exceptions import Exit

from playbooks import deploy, fleet, progress, run, teardown
from playbooks.runs import state as runstate
from playbooks.providers import local

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(300)]
NAME = "e2e" + secrets.token_hex(2)
IMAGES = 90


@pytest.fixture(scope="module")
def ctx(fleet_base):
    yield from sampled_ctx(fleet_base, NAME, IMAGES, (800, 600), job__lost_after=3.0, job__poll=0.2)


@pytest.fixture(scope="module")
def up(ctx):
    bring_up(ctx, NAME, n=3)
    return ctx






def test_create_is_idempotent_and_list_tells_the_truth(up):
    nodes = local.list_nodes(up, NAME)
    assert [n.state for n in nodes] == ["running"] * 3
    assert len({n.host for n in nodes}) == 3
    fleet.create(up, n=3, name=NAME)  # nothing to add
    assert [n.id for n in local.list_nodes(up, NAME)] == [n.id for n in nodes]
    deployed = json.loads((Path(up.config.fleet.state_dir) / NAME / "deploy.json").read_text())
    assert set(deployed) == {n.name for n in nodes}  # deploy recorded each node's interpreter, and it ran
    assert all(d["python"] == n.python and d["version"].startswith("3.") for n, d in
               ((n, deployed[n.name]) for n in nodes))
    known = (Path(up.config.fleet.state_dir) / NAME / "known_hosts").read_text()
    for n in nodes:
        assert f"[{n.host}]:{n.port} ssh-ed25519 " in known  # pinned by the fleet, not accepted on first use


def test_run_resizes_everything_then_a_second_run_changes_nothing(up):
    record = run.start(up, NAME, local.list_nodes(up, NAME), "resize", "src", "out", "--size 128")
    snap = progress.wait_until_finished(up, record)
    assert snap["done"] == IMAGES and snap["failed"] == 0
    outs = check_resized(up)
    before = {k: (p.stat().st_ino, p.stat().st_mtime_ns) for k, p in outs.items()}
    record2 = run.start(up, NAME, local.list_nodes(up, NAME), "resize", "src", "out", "--size 128")
    progress.wait_until_finished(up, record2)
    after = {k: (p.stat().st_ino, p.stat().st_mtime_ns) for k, p in outputs(up).items()}
    assert after == before
    # every node wrote its heartbeat and exit file on the shared disk, under the run's folder
    for entry in record2["nodes"]:
        beat, exit_ = runstate.node_files(up, record2["run_id"], entry["name"])
        assert beat["node"] == entry["name"] and exit_["code"] == 0


def test_progress_counts_without_a_stat_per_file(up, monkeypatch):
    record = runstate.load_run(up)
    out_files = {str(p) for p in outputs(up).values()}
    touched = []
    for fn in ("stat", "lstat"):
        real = getattr(os, fn)
        monkeypatch.setattr(os, fn, lambda p, *a, _real=real, **k: (touched.append(os.fspath(p)), _real(p, *a, **k))[1])
    snap = progress.snapshot(up, record)
    monkeypatch.undo()
    assert snap["done"] == IMAGES
    assert not out_files & set(touched), "progress looked at output files one by one"


def test_progress_json_for_scripts(up, fleet_base):
    result = invoke_cli(fleet_base, "progress", "--json")
    assert result.returncode == 0, result.stderr
    snap = json.loads(result.stdout)
    assert set(snap) == {"run_id", "total", "done", "failed", "rate_per_s", "eta_s", "elapsed_s", "duration_s",
                         "processed", "cost_usd", "nodes", "nodes_lost", "nodes_preempted", "nodes_failed",
                         "nodes_replaced"}
    assert snap["total"] == snap["done"] == IMAGES and snap["cost_usd"] is None
    assert {n["name"] for n in snap["nodes"]} == {f"{NAME}-{i}" for i in range(3)}
    assert set(snap["nodes"][0]) == {"name", "rate_per_s", "last_seen_s", "state", "cause"}
    watched = invoke_cli(fleet_base, "progress", "--watch", "--json")  # a finished run: one line, then done
    assert watched.returncode == 0 and [json.loads(ln)["done"] for ln in watched.stdout.splitlines()] == [IMAGES]


def test_node_key_can_do_sftp_only(up):
    fdir = Path(up.config.fleet.state_dir) / NAME
    head = json.loads((fdir / "head" / "head.json").read_text())
    ssh = ["ssh", "-i", str(fdir / "node_ed25519"), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
           "-o", f"UserKnownHostsFile={fdir / 'nodes' / (NAME + '-0') / 'home' / '.ssh' / 'known_hosts'}",
           "-o", "StrictHostKeyChecking=yes", "-p", str(head["port"]), f"{getpass.getuser()}@{head['host']}"]
    shell = subprocess.run([*ssh, "echo", "SHELL-RAN"], capture_output=True, text=True, timeout=30)
    assert "SHELL-RAN" not in shell.stdout
    assert shell.returncode != 0
    forward = subprocess.run([*ssh, "-N", "-L", "127.0.0.1:0:127.0.0.1:22", "-o", "ExitOnForwardFailure=yes"],
                             capture_output=True, text=True, timeout=30)
    assert forward.returncode != 0


@pytest.mark.skipif(not ROOT, reason="per-node users need root; without root isolation is reduced (fleet.list says so)")
def test_a_node_cannot_touch_the_head_directly(up):
    node = local.list_nodes(up, NAME)[0]
    head_dir = Path(up.config.shared.root)
    probe = subprocess.run(["runuser", "-u", node.user, "--", "sh", "-c",
                            f"ls {head_dir} || touch {head_dir}/x || cat /root/.profile"], capture_output=True,
                           text=True)
    assert probe.returncode != 0 and not (head_dir / "x").exists()


def test_a_killed_node_is_reported_lost_and_a_rerun_completes(up):
    dst = "out-kill"
    nodes = local.list_nodes(up, NAME)
    record = run.start(up, NAME, nodes, "resize", "src", dst, "--size 96")
    victim = nodes[1]
    # freeze every node's workload, so the kill lands mid-run whatever the speed of this machine
    frozen = [p for n in nodes for p in local.node_processes(NAME, n.name) if "workloads/" in cmdline(p)]
    for p in frozen:
        p.send_signal(signal.SIGSTOP)
    assert len(outputs(up, dst)) < IMAGES, "the run finished before the kill: make IMAGES larger"
    pid = next(e["pid"] for e in record["nodes"] if e["name"] == victim.name)
    assert psutil.pid_exists(pid), "the workload must survive the SSH session that started it"
    local.kill_node(up, NAME, victim.name)
    for p in frozen:
        if p.is_running():
            p.send_signal(signal.SIGCONT)
    with pytest.raises(Exit) as lost:
        progress.wait_until_finished(up, record)
    assert f"{victim.name} (lost: its machine is gone)" in lost.value.message   # its cause, named
    assert [n.state for n in local.list_nodes(up, NAME)].count("terminated") == 1
    survivors = [n for n in local.list_nodes(up, NAME) if n.state == "running"]
    progress.wait_until_finished(up, run.start(up, NAME, survivors, "resize", "src", dst, "--size 96"))
    check_resized(up, dst, 96)
    leftovers = [p for p in (Path(up.config.shared.root) / dst).rglob("*") if ".tmp-" in p.name]
    assert not leftovers
    fleet.create(up, n=3, name=NAME)  # the fleet heals: the vanished node is replaced
    assert [n.state for n in local.list_nodes(up, NAME)] == ["running"] * 3


def test_a_stopped_node_is_not_running(up):
    node = local.list_nodes(up, NAME)[2]
    sshd = psutil.Process(int(node.id))
    sshd.send_signal(signal.SIGSTOP)
    try:
        assert local.list_nodes(up, NAME)[2].state == "unreachable"
    finally:
        sshd.send_signal(signal.SIGCONT)
    assert local.list_nodes(up, NAME)[2].state == "running"


def test_teardown_leaves_nothing(up, fleet_base):
    teardown.teardown(up, name=NAME)
    assert fleet_processes(NAME) == []
    assert not (Path(up.config.fleet.state_dir) / NAME).exists()
    mounts = Path("/proc/self/mounts").read_text()
    assert "fuse.sshfs" not in "\n".join(ln for ln in mounts.splitlines() if str(fleet_base) in ln)
    teardown.teardown(up, name=NAME)  # a second call is a no-op
    if ROOT:
        users = subprocess.run(["getent", "passwd"], capture_output=True, text=True).stdout
        assert f"fb-{NAME}-" not in users
