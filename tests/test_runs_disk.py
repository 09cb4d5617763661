"""runs/disk.py: the shared disk of a fleet, on this machine (``LocalDisk``) or on a head instance over SFTP
(``HeadDisk``, on the GCE fake with a real sshd configured like a head instance).  The same checks run on both:
what run, progress, overhead and data use of it, with the same answers."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.cloud import FLEET
from tests.support.fleet import make_ctx
from playbooks.providers import FleetSpec, gcp
from playbooks.providers import cloud as cc
from playbooks.runs import disk as rundisk
from playbooks.runs import head_instance as hi
from playbooks.runs import state as runstate
from playbooks.runs.samples import make_samples
from test_gcp_head_instance import (head_instance_sshd, point_at_head, pytestmark as head_marks,  # noqa: F401
                                    sftp_user)

RUN = "resize-20260101-000000-abcd"


def record_for(provider: str) -> dict:
    return {"run_id": RUN, "fleet": FLEET, "provider": provider, "workload": "resize", "src": "src", "dst": "out",
            "args": "--size 32", "started_at": 1000.0, "nodes": [{"name": "n-0", "shard": 0},
                                                                 {"name": "n-1", "shard": 1}]}


def prepare(root: Path) -> list[str]:
    """Three inputs, one of them done (its output there), one failed (its failure record), as nodes leave them;
    a heartbeat of n-0 with a field of the wrong type, an exit record of n-1.  Returns the items."""
    fw = runstate.fleetwork()
    make_samples(root / "src", 3, size=(48, 32))
    wl = fw.load("resize")
    opts = wl.parse_args(["--src", str(root / "src"), "--dst", str(root / "out"), "--size", "32"])
    items = wl.list_items(str(root / "src"), opts)
    out = root / "out" / wl.output_for(items[0], opts)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "src" / items[0], out)
    fw.record_failure(str(root / "out"), items[1], "bad-input", "cannot identify image", node="n-1")
    return items


def write_node_files(root: Path) -> None:
    state = root / ".fleetbook" / "runs" / RUN / "nodes"
    (state / "n-0" / "heartbeat.json").write_text(json.dumps({"updated_at": 1010.0, "done": "lots",
                                                              "rate_per_s": 2.5}))
    (state / "n-1" / "exit.json").write_text(json.dumps({"code": 0, "finished_at": 1020.0,
                                                         "summary": {"done": 1}}))


def exercise(c, disk, root: Path, provider: str) -> None:
    """What the steps ask of a shared disk, checked against the files in ``root`` (where it really is)."""
    record = record_for(provider)
    items = prepare(root)
    assert disk.is_dir("src") and not disk.is_dir("nowhere")
    runstate.save_run(disk, record, latest=True)                # what `invoke run` writes
    assert (root / ".fleetbook" / "runs" / "LATEST").read_text() == RUN + "\n"
    assert json.loads((root / ".fleetbook" / "runs" / RUN / "run.json").read_text()) == record
    assert runstate.load_run(c, provider=provider, fleet=FLEET) == record     # read back where it was written
    write_node_files(root)
    disk.give_to_nodes("out", tree=True)

    tally = disk.tally(record)
    assert (tally.counts["total"], tally.counts["done"], tally.counts["failed"]) == (3, 1, 1)
    assert isinstance(tally.free_bytes, int) and tally.free_bytes > 0
    assert tally.node("n-0") == ({"updated_at": 1010.0, "rate_per_s": 2.5}, None)   # "lots" is no number
    assert tally.node("n-1") == (None, {"code": 0, "finished_at": 1020.0, "summary": {"done": 1}})
    assert tally.node("not-in-the-run") == (None, None)
    assert set(disk.tally(record, count=False).nodes) == {"n-0", "n-1"}
    assert set(disk.failures(record)) == {items[1]}
    assert disk.failures(record)[items[1]]["reason"] == "bad-input"

    disk.mkdirs("a/b")
    disk.write_text("a/b/note.txt", "hello\n")
    assert (root / "a" / "b" / "note.txt").read_text() == "hello\n" and disk.read_text("a/b/note.txt") == "hello\n"
    assert disk.read_text("a/missing.txt") is None
    listed = disk.store("out").list()                           # what `invoke data.pull --from out` copies
    assert set(listed) == {str(Path(p).relative_to(root / "out")) for p in (root / "out").rglob("*")
                           if p.is_file()}


def test_the_shared_root_on_this_machine(tmp_path):
    c = make_ctx(tmp_path)
    disk = rundisk.shared_disk(c, "local", FLEET)
    assert isinstance(disk, rundisk.LocalDisk) and not disk.remote
    assert disk.where == f" {tmp_path / 'data'}"
    assert rundisk.head_of(c, "local", FLEET) is None
    (tmp_path / "data" / ".fleetbook" / "runs" / RUN / "nodes").mkdir(parents=True)
    exercise(c, disk, tmp_path / "data", "local")
    assert rundisk.of_record(c, record_for("local")).path == tmp_path / "data"


def test_a_cloud_fleet_without_a_head_instance_keeps_the_shared_root_here(gcp_ctx, gce, tmp_path):
    gcp_ctx.config.shared.root = str(tmp_path / "here")
    gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=1))         # the tunnel head: this machine serves the root
    disk = rundisk.shared_disk(gcp_ctx, "gcp", FLEET)
    assert isinstance(disk, rundisk.LocalDisk) and disk.path == tmp_path / "here"
    hi._REMOTE_HEADS.clear()
    gcp.terminate(gcp_ctx, FLEET)


@pytest.mark.skipif(any(m.args[0] for m in head_marks), reason="a head instance needs root and sshfs")
def test_the_shared_root_on_a_head_instance(gcp_ctx, gce, fleet_sshd, head_instance_sshd, tmp_path, monkeypatch):
    c = gcp_ctx
    point_at_head(c, gce, fleet_sshd, head_instance_sshd, tmp_path, monkeypatch)
    root = head_instance_sshd[0] / cc.HEAD_DATA
    gcp.create(c, FleetSpec(name=FLEET, count=1, head="instance"))
    gcp.wait_ready(c, FLEET, 20)
    disk = rundisk.shared_disk(c)                                # gcp and the fleet from the settings
    try:
        assert isinstance(disk, rundisk.HeadDisk) and disk.remote and disk.where == " on the head instance"
        assert rundisk.shared_disk(c, "gcp", FLEET).head is disk.head     # looked up once per process
        disk.mkdirs(f".fleetbook/runs/{RUN}/nodes")
        exercise(c, disk, root, "gcp")
        shipped = {p.name for p in (tmp_path / "head-work" / "workloads").glob("*.py")}
        assert shipped == {p.name for p in Path(hi.REPO / "workloads").glob("*.py")}   # every workload module
        assert not (tmp_path / "not-the-head").exists()           # nothing landed on the operator's disk
    finally:
        disk.close()
        hi._REMOTE_HEADS.clear()
    gcp.terminate(c, FLEET)
