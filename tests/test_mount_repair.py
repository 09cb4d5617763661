"""Issue 13 item 4 on a real 2-node local fleet (real sshd, real sshfs): a node's sshfs dies mid-run; the workload
waits for its mount instead of failing, `invoke progress` names the cause from the node's own disk (the shared one
is what it lost), `invoke mount` repairs the dead mount, the workload goes on by itself, and the run ends with every
output valid and not one item recorded as failed.  A dead mount found by the next run's preflight is repaired too."""
from __future__ import annotations

import errno
import json
import os
import secrets
import time
from pathlib import Path

import pytest
from tests.support.fleet import bring_up, check_resized, cmdline, invoke_cli, make_ctx, outputs

from playbooks import progress, run, teardown
from playbooks.engines.launch import local_state
from playbooks.providers import local
from playbooks.runs import state as runstate
from playbooks.runs.samples import make_samples

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(300)]
NAME = "mnt" + secrets.token_hex(2)
IMAGES = 60
ENV = {"INVOKE_JOB_LOST_AFTER": "3", "INVOKE_JOB_POLL": "0.2", "INVOKE_FLEET_NAME": NAME}


@pytest.fixture(scope="module")
def up(fleet_base):
    c = make_ctx(fleet_base, job__lost_after=3.0, job__poll=0.2, job__item_delay=0.15, job__mount_wait=60.0,
                 local__cores_per_node=1)
    make_samples(fleet_base / "data" / "src", IMAGES, size=(160, 120))
    bring_up(c, NAME, n=2)
    yield c
    teardown.teardown(c, name=NAME)


def _kill_sshfs(node: str) -> None:
    mounts = [p for p in local.node_processes(NAME, node) if "sshfs" in cmdline(p)]
    assert mounts, f"no sshfs process on {node}"
    for p in mounts:
        p.kill()
    for p in mounts:
        p.wait(10)


def _until(what, check, deadline_s=90):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {deadline_s} s: {what}")


def _made(c, dst):
    return [k for k in outputs(c, dst) if not os.path.basename(k).startswith(".")]


def test_a_dead_mount_mid_run_is_named_repaired_and_the_run_goes_on(up, fleet_base):
    nodes = local.list_nodes(up, NAME)
    record = run.start(up, NAME, nodes, "resize", "src", "out", "--size 64")
    _until("outputs appear", lambda: len(_made(up, "out")) >= 8)
    victim = nodes[0]
    _kill_sshfs(victim.name)
    t_lost = time.time()
    # its heartbeat on the shared disk goes stale: `progress` asks the node itself why
    _until("the victim counts as lost", lambda: time.time() - ((runstate.node_files(up, record["run_id"], victim.name)[0]
                                                                 or {}).get("updated_at", 0)) > 3.5)
    shown = invoke_cli(fleet_base, "progress", env=ENV)
    assert shown.returncode == 0, shown.stderr
    assert "mount lost: Transport endpoint is not connected" in " ".join(shown.stdout.split()), shown.stdout
    as_json = invoke_cli(fleet_base, "progress", "--json", env=ENV)
    causes = {n["name"]: n["cause"] for n in json.loads(as_json.stdout)["nodes"]}
    assert causes[victim.name].startswith("mount lost: Transport endpoint is not connected"), causes
    health_file = Path(victim.labels["home"]) / "fleetbook" / local_state(record["run_id"]) / "health.json"
    health = json.loads(health_file.read_text())
    # the node's own first word: a request in flight when sshfs died gets ECONNABORTED, a later one ENOTCONN
    assert health["state"] == "mount-lost" and any(os.strerror(e) in health["error"]
                                                   for e in (errno.ENOTCONN, errno.ECONNABORTED)), health
    # `invoke mount` repairs it (the dead mount is still listed: a plain mkdir -p on it fails)
    fixed = invoke_cli(fleet_base, "mount", env=ENV)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    said = " ".join(fixed.stdout.split())
    assert f"{victim.name}: its mount was dead (Transport endpoint is not connected)" in said, said
    # the workload that waited goes on by itself: the run ends complete, 0 failed, nothing partial
    snap = progress.wait_until_finished(up, record)
    t_back = json.loads(health_file.read_text())["recovered_at"]
    assert snap["done"] == IMAGES and snap["failed"] == 0
    assert {n["state"] for n in snap["nodes"]} == {"done"}
    check_resized(up, "out", size=64)
    assert not [k for k in outputs(up, "out") if os.path.basename(k).startswith(".")]
    assert not (fleet_base / "data" / "out" / ".failed").exists() or \
        not list((fleet_base / "data" / "out" / ".failed").iterdir())
    _, exit_ = runstate.node_files(up, record["run_id"], victim.name)
    assert exit_["code"] == 0 and exit_["summary"]["mount_recoveries"] == 1
    log = (fleet_base / "data" / runstate.node_state_rel(record["run_id"], victim.name) / "log.txt").read_text()
    # its first word there, as in health.json above: ECONNABORTED (in flight when sshfs died) or ENOTCONN
    assert any(f"mount lost: {os.strerror(e)}" in log for e in (errno.ENOTCONN, errno.ECONNABORTED)), log
    assert "the mount answers again" in log
    assert "Traceback" not in log, log
    print(f"\nMOUNT-REPAIR: mount loss to the workload going on: {t_back - t_lost:.1f} s (repaired by hand)")


def test_the_preflight_repairs_a_dead_mount_before_a_run(up, fleet_base):
    nodes = local.list_nodes(up, NAME)
    _kill_sshfs(nodes[1].name)
    r = invoke_cli(fleet_base, "run", "--workload", "resize", "--dst", "out2", "--args", "--size 64", "--wait",
                   env={**ENV, "INVOKE_JOB_ITEM_DELAY": "0"})
    said = " ".join(r.stdout.split())
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"the shared disk's mount is dead on {nodes[1].name}" in said and "remounting it" in said, said
    check_resized(up, "out2", size=64)


def test_until_done_restarts_a_node_whose_workload_gave_up_on_its_mount(up, fleet_base):
    """The workload waits only 1 s for its mount (job.mount_wait), so it ends `unhealthy` (exit 4) before the
    supervisor sees it silent: the supervisor reads that on the node, remounts it and starts the workload again on
    its shard; nothing replaced, nothing failed."""
    import subprocess
    from tests.support.fleet import INVOKE
    from playbooks.settings.defaults import REPO
    env = {**os.environ, "INVOKE_FLEET_STATE_DIR": str(fleet_base / "state"), "INVOKE_SHARED_ROOT":
           str(fleet_base / "data"), **ENV, "INVOKE_JOB_ITEM_DELAY": "0.15", "INVOKE_JOB_MOUNT_WAIT": "1",
           "INVOKE_LOCAL_CORES_PER_NODE": "1", "COLUMNS": "200"}
    def latest():
        try:
            return runstate.latest(up)
        except runstate.NoRun:
            return None
    before = latest()
    proc = subprocess.Popen([INVOKE, "run", "--workload", "resize", "--dst", "out3", "--args", "--size 64",
                             "--until-done"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        _until("the run is under way", lambda: latest() not in (None, before) and len(_made(up, "out3")) >= 8)
        record = runstate.load_run(up)
        victim = record["nodes"][0]["name"]
        _kill_sshfs(victim)
        stdout, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    said = " ".join(stdout.split())
    assert proc.returncode == 0, said
    check_resized(up, "out3", size=64)
    report = json.loads((fleet_base / "data" / runstate.run_rel(record["run_id"]) / "report.json").read_text())
    assert report["done"] == IMAGES and report["failed"] == 0 and report["nodes_replaced"] == 0
    assert len(report["repairs"]) == 1, (report["repairs"], said)
    [repair] = report["repairs"]
    assert repair["node"] == victim and repair["cause"] == "mount lost: Transport endpoint is not connected"
    assert repair["action"] == f"remounted and restarted on shard {record['nodes'][0]['shard']}", repair
    assert report["mounts_repaired"] == 1
    entry = next(e for e in runstate.load_run(up, record["run_id"])["nodes"] if e["name"] == victim)
    assert entry["restarts"] == 1
    _, exit_ = runstate.node_files(up, record["run_id"], victim)
    assert exit_["code"] == 0                     # the restarted workload's own exit, not the unhealthy one
    log = (fleet_base / "data" / runstate.node_state_rel(record["run_id"], victim) / "log.txt").read_text()
    assert "Traceback" not in log, log
    assert "did not come back within 1 s" in log   # the first workload's last words, kept on the node's disk
