"""The Dask engine on a real 3-node local fleet: dask.up, run --engine dask, a worker lost mid-run, dask.down."""
from __future__ import annotations

import copy
import math
import secrets
import socket
import time
from pathlib import Path

import psutil
import pytest
from tests.support.fleet import bring_up, check_resized, cmdline, fleet_processes, outputs
from invoke import Config, Context

from playbooks import dask_tasks, fleet, mount, progress, run, teardown
from playbooks.runs import state as runstate
from playbooks.settings.defaults import DEFAULTS
from playbooks.engines import dask as engine
from playbooks.engines.errors import EngineError
from playbooks.providers import local
from playbooks.runs.samples import make_samples

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(300)]
NAME = "dk" + secrets.token_hex(2)
IMAGES = 36


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dask_ctx(base: Path) -> Context:
    """Like fleet_fixtures.make_ctx, plus the engine's ``dask`` subtree on free ports."""
    defaults = copy.deepcopy(DEFAULTS)
    defaults["fleet"]["state_dir"] = str(base / "state")
    defaults["shared"]["root"] = str(base / "data")
    defaults["fleet"]["ready_timeout"] = 30.0
    defaults["job"].update(lost_after=3.0, poll=0.2)
    defaults["dask"] = dict(engine.DASK_DEFAULTS, port=free_port(), dashboard_port=free_port(), mount_check_s=1.0)
    cfg = Config(overrides={"run": {"hide": True}})
    cfg.load_collection(defaults)
    return Context(config=cfg)


def dask_processes(fleet_name: str, state: dict | None) -> list[str]:
    """Every Dask scheduler or worker process of this fleet that still runs."""
    found = []
    for proc in psutil.process_iter(["cmdline", "username"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if "dask_worker" not in cmd and "dask_scheduler" not in cmd:
                continue
            mine = (proc.environ().get("FLEETBOOK_NODE", "").startswith(fleet_name + "/")
                    or (proc.info["username"] or "").startswith(f"fb-{fleet_name}-")
                    or (state and f"--port {state['port']}" in cmd and "dask_scheduler" in cmd))
            if mine:
                found.append(f"{proc.pid} {cmd}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture(scope="module")
def ctx(fleet_base):
    c = dask_ctx(fleet_base)
    make_samples(fleet_base / "data" / "src", IMAGES, size=(800, 600))
    try:
        yield c
    finally:
        try:
            dask_tasks.down(c, name=NAME)
        finally:
            teardown.teardown(c, name=NAME)


@pytest.fixture(scope="module")
def up(ctx):
    bring_up(ctx, NAME, n=3)
    dask_tasks.up(ctx, name=NAME)
    return ctx






def test_up_starts_a_scheduler_on_the_head_and_workers_on_every_node(up):
    state = engine.read_state(up, NAME)
    assert state["address"] == f"tcp://127.0.0.1:{up.config.dask.port}"
    assert engine.scheduler_alive(state)
    nodes = local.list_nodes(up, NAME)
    assert set(state["workers"]) == {n.name for n in nodes}
    with engine.connect_client(state["address"]) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        assert sorted(w["name"] for w in workers) == sorted(n.name for n in nodes)
        assert {w["host"] for w in workers} == {n.host for n in nodes}  # each on its node's own address
    # the workers run as the nodes' users, with the nodes' interpreter, detached from the SSH session
    for n in nodes:
        procs = [p for p in local.node_processes(NAME, n.name, n.user if n.labels["isolation"] == "user" else None)
                 if "dask_worker" in cmdline(p)]
        assert procs, f"no dask worker on {n.name}"
    # its record lives beside the fleet's folder: a torn-down fleet cannot hide a running scheduler
    assert (Path(up.config.fleet.state_dir) / NAME) not in engine.state_file(up, NAME).parents
    dask_tasks.up(up, name=NAME)  # already up: a no-op
    assert engine.read_state(up, NAME)["scheduler_pid"] == state["scheduler_pid"]


def test_run_engine_dask_matches_the_local_engine_in_ceil_items_over_chunk_tasks(up):
    nodes = local.list_nodes(up, NAME)
    record = run.start(up, NAME, nodes, "resize", "src", "out-local", "--size 64")
    progress.wait_until_finished(up, record)
    local_outs = check_resized(up, "out-local", 64)

    result = run.run_(up, workload="resize", src="src", dst="out-dask", args="--size 64 --chunksize 5",
                      name=NAME, engine="dask")
    assert result["tasks"] == result["tasks_planned"] == math.ceil(IMAGES / 5)
    assert result["done"] == IMAGES and result["failed"] == 0 and not result["errors"]
    dask_outs = check_resized(up, "out-dask", 64)
    assert set(dask_outs) == set(local_outs)
    for rel in local_outs:
        assert dask_outs[rel].read_bytes() == local_outs[rel].read_bytes(), rel
    # the run is recorded like any other: `invoke progress` counts it on the head
    snap = progress.snapshot(up, runstate.load_run(up, result["run_id"]))
    assert snap["done"] == IMAGES and snap["nodes"][0]["state"] == "done"
    # restartable: a second run finds everything done and submits nothing
    again = engine.run(up, NAME, nodes, "resize", "src", "out-dask", "--size 64 --chunksize 5")
    assert again["tasks"] == 0 and again["skipped"] == IMAGES


def test_the_engines_are_interchangeable_on_one_destination(up):
    nodes = local.list_nodes(up, NAME)
    dst = Path(up.config.shared.root) / "out-mixed"
    # half the outputs from the local engine's run (copied), the rest by Dask: only the missing ones are submitted
    local_outs = outputs(up, "out-local")
    for rel in sorted(local_outs)[: IMAGES // 2]:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_bytes(local_outs[rel].read_bytes())
    result = engine.run(up, NAME, nodes, "resize", "src", "out-mixed", "--size 64 --chunksize 4")
    assert result["todo"] == IMAGES - IMAGES // 2 and result["tasks"] == math.ceil(result["todo"] / 4)
    mixed = check_resized(up, "out-mixed", 64)
    assert all(mixed[rel].read_bytes() == local_outs[rel].read_bytes() for rel in mixed)


def busy_other_node(summary, client) -> str:
    """A node whose worker has chunks at work, other than the one that just sent ``summary``."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    busy = [addr for addr, keys in client.processing().items() if keys]
    victims = [info[a]["name"] for a in busy if a in info and info[a]["name"] != summary["node"]]
    assert victims, "no other worker was busy: the run is too fast for this test, make IMAGES larger"
    return victims[0]


def test_a_worker_whose_mount_dropped_is_remounted_and_loses_nothing(up):
    """A node's sshfs dies mid-run (its worker lives on): the head finds the dead mount through Dask and remounts
    it; the node's chunks in flight wait for it and go on, no chunk fails, no item is failed."""
    nodes = local.list_nodes(up, NAME)
    hit = []

    def kill_a_busy_mount(summary, client):
        if hit:
            return
        victim = busy_other_node(summary, client)
        mounts = [p for p in local.node_processes(NAME, victim) if "sshfs" in cmdline(p)]
        assert mounts, f"no sshfs process on {victim}"
        for p in mounts:
            p.kill()
        hit.append((victim, time.time()))

    t0 = time.time()
    result = engine.run(up, NAME, nodes, "resize", "src", "out-mount", "--size 80 --no-draft --chunksize 2",
                        on_result=kill_a_busy_mount, remount=lambda ns: mount.mount_all(up, NAME, ns, "local"))
    took = time.time() - t0
    assert hit and not result["errors"], result["errors"]
    assert result["done"] + result["skipped"] == IMAGES and result["failed"] == 0
    assert not list((Path(up.config.shared.root) / "out-mount" / ".failed").glob("*"))
    check_resized(up, "out-mount", 80)
    victim, killed_at = hit[0]
    [rep] = result["mount_repairs"]
    assert rep["node"] == victim and "not connected" in rep["cause"].lower(), rep
    assert killed_at < rep["remounted_at"] < killed_at + 10, rep   # a check every dask.mount_check_s (1 s here)
    print(f"mount killed -> remounted {rep['remounted_at'] - killed_at:.1f} s; run {took:.1f} s")
    # the node works again: its mount answers, and it did chunks after the repair
    assert any(s["node"] == victim and s["ended_at"] > rep["remounted_at"] for s in result["chunks"]), \
        "the remounted node did no chunk after its repair"


def test_a_worker_killed_mid_run_loses_nothing(up):
    nodes = local.list_nodes(up, NAME)
    killed = []

    def kill_a_busy_node(summary, client):
        if killed:
            return
        victim = busy_other_node(summary, client)
        local.kill_node(up, NAME, victim)  # the whole node vanishes, its worker and its mount with it
        killed.append(victim)

    result = engine.run(up, NAME, nodes, "resize", "src", "out-kill", "--size 96 --no-draft --chunksize 2",
                        on_result=kill_a_busy_node)
    assert killed and [n.state for n in local.list_nodes(up, NAME)].count("terminated") == 1
    assert result["tasks"] == math.ceil(IMAGES / 2) and not result["errors"]
    assert result["done"] + result["skipped"] == IMAGES and result["failed"] == 0
    check_resized(up, "out-kill", 96)


def test_run_without_a_cluster_says_what_to_do(up, fleet_base):
    other = dask_ctx(fleet_base)
    other.config.fleet.state_dir = str(fleet_base / "elsewhere")
    with pytest.raises(EngineError) as e:
        engine.run(other, NAME, local.list_nodes(up, NAME), "resize", "src", "out-x", "")
    assert "invoke dask.up" in e.value.message


def test_down_leaves_nothing_running(up):
    state = engine.read_state(up, NAME)
    assert dask_processes(NAME, state)
    dask_tasks.down(up, name=NAME)
    assert dask_processes(NAME, state) == []
    assert engine.read_state(up, NAME) is None
    dask_tasks.down(up, name=NAME)  # a second call does nothing
    teardown.teardown(up, name=NAME)
    assert fleet_processes(NAME) == []
