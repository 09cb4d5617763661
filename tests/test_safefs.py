"""playbooks/safefs.py: below the shared root the head follows no symlink, and no path leaves the root.

Every test plants links the way a node could (anywhere below the shared root) towards a canary folder outside
it, and checks that the canary is untouched, byte for byte, whatever was refused or done.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from tests.support.fleet import invoke_cli, make_ctx

from playbooks import demo
from playbooks.runs import state as runstate
from playbooks.fs import safefs
from playbooks.runs.samples import make_samples


def snapshot(folder: Path) -> dict:
    """Every entry below ``folder`` with its kind and, for files, the sha256 of its content."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        out[rel] = ("link", os.readlink(p)) if p.is_symlink() else \
            ("dir",) if p.is_dir() else ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture
def world(tmp_path):
    """(shared root, canary folder outside it, the canary's snapshot)."""
    root, canary = tmp_path / "data", tmp_path / "canary"
    root.mkdir()
    (canary / "sub").mkdir(parents=True)
    for rel, text in (("LATEST", "precious\n"), ("run.json", '{"keep": 1}'), ("sub/a.txt", "a"), ("img.jpg", "x")):
        (canary / rel).write_text(text)
    return root, canary, snapshot(canary)


def one_line(exc) -> str:
    msg = exc.value.message
    assert "\n" not in msg and msg, msg
    return msg


@pytest.mark.parametrize("value, expected", [
    ("src", "src"), ("out/run1/", "out/run1"), ("./a//b/.", "a/b"), ("demo/src", "demo/src")])
def test_rel_path_accepts_paths_below_the_root(value, expected):
    assert safefs.rel_path(value) == expected


@pytest.mark.parametrize("value, why", [
    ("/tmp/x", "not absolute"), ("../../../tmp/y", "'..'"), ("a/../../b", "'..'"), ("..", "'..'"),
    ("", "names no folder"), (".", "names no folder"), ("s3://bucket/x", "URL"), ("a\0b", "NUL")])
def test_rel_path_refuses_what_leaves_the_root(value, why):
    with pytest.raises(safefs.Refused) as exc:
        safefs.rel_path(value, "--dst")
    assert why in one_line(exc) and "--dst" in exc.value.message


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", "", "x" * 200, "run id"])
def test_name_is_one_plain_component(bad):
    assert safefs.name("resize-20250101-120000-ab12") == "resize-20250101-120000-ab12"
    with pytest.raises(safefs.Refused):
        safefs.name(bad)


def test_writes_never_go_through_a_link(world):
    root, canary, before = world
    disk = safefs.Root(root)
    (root / ".fleetbook").mkdir()
    (root / ".fleetbook" / "runs").symlink_to(canary)                # the run state folder swapped for a link
    for call in (lambda: disk.write_text(".fleetbook/runs/LATEST", "evil"),
                 lambda: disk.write_json(".fleetbook/runs/x/run.json", {}),
                 lambda: disk.mkdirs(".fleetbook/runs/x/nodes/n"),
                 lambda: disk.write_bytes(".fleetbook/runs/sub/a.txt", b"evil")):
        with pytest.raises(safefs.Refused) as exc:
            call()
        assert "is a symlink" in one_line(exc) and str(root / ".fleetbook" / "runs") in exc.value.message
    assert snapshot(canary) == before


def test_a_link_at_the_final_name_is_replaced_not_followed(world):
    root, canary, before = world
    disk = safefs.Root(root)
    (root / "runs").mkdir()
    (root / "runs" / "LATEST").symlink_to(canary / "LATEST")
    disk.write_text("runs/LATEST", "resize-1\n")
    assert not (root / "runs" / "LATEST").is_symlink() and disk.read_text("runs/LATEST") == "resize-1\n"
    assert [p.name for p in (root / "runs").iterdir()] == ["LATEST"]   # no temp file left behind
    assert snapshot(canary) == before


def test_reads_refuse_links_and_never_block(world, tmp_path):
    root, canary, before = world
    disk = safefs.Root(root)
    (root / "state").mkdir()
    (root / "state" / "LATEST").symlink_to(canary / "LATEST")
    (root / "state" / "zero").symlink_to("/dev/zero")
    (root / "linked").symlink_to(canary)
    os.mkfifo(root / "state" / "fifo")
    for rel in ("state/LATEST", "state/zero", "linked/run.json", "linked"):
        with pytest.raises(safefs.Refused):
            disk.read_text(rel)
    with pytest.raises(safefs.Refused):
        disk.is_dir("linked")
    with pytest.raises(safefs.Refused):
        disk.checked("linked/sub")
    t0 = time.monotonic()
    assert disk.read_text("state/fifo") is None and time.monotonic() - t0 < 1   # a FIFO is no file
    assert disk.read_json("state/missing.json") is None and not disk.exists("nothing/here")
    (root / "state" / "big").write_bytes(b"0" * 100)
    assert disk.read_bytes("state/big", limit=10) is None                      # bigger than asked: not read
    assert disk.checked("state") == root / "state"
    assert snapshot(canary) == before


def test_rmtree_removes_links_never_their_targets(world):
    root, canary, before = world
    disk = safefs.Root(root)
    (root / "demo" / "out" / "deep").mkdir(parents=True)
    (root / "demo" / "out" / "deep" / "to-canary").symlink_to(canary)
    (root / "demo" / "out" / "file-link").symlink_to(canary / "img.jpg")
    disk.rmtree("demo/out")                                           # links inside: removed, not followed
    assert not (root / "demo" / "out").exists()
    (root / "demo" / "out").symlink_to(canary)
    with pytest.raises(safefs.Refused):
        disk.rmtree("demo/out")                                       # the folder itself a link
    (root / "demo" / "out").unlink()
    (root / "demo").rename(root / "demo-real")
    (root / "demo").symlink_to(canary)
    with pytest.raises(safefs.Refused):
        disk.rmtree("demo/sub")                                       # a link above it
    disk.rmtree("never/was")                                          # nothing there: nothing to do
    assert snapshot(canary) == before


def test_samples_and_the_demo_refuse_planted_links(world):
    root, canary, before = world
    c = make_ctx(root.parent)
    for plant in ("demo", "demo/src", "demo/out", "demo/src/00"):
        parent = root / plant.rsplit("/", 1)[0] if "/" in plant else root
        parent.mkdir(parents=True, exist_ok=True)
        (root / plant).symlink_to(canary)
        with pytest.raises(safefs.Refused) as exc:
            demo.prepare(c, "demo/src", "demo/out", 3)
        assert "is a symlink" in one_line(exc)
        assert snapshot(canary) == before, plant
        (root / plant).unlink()
    assert demo.prepare(c, "demo/src", "demo/out", 3) == 3                      # no link: it works
    assert len(list((root / "demo" / "src").rglob("*.jpg"))) == 3 and not (root / "demo" / "out").exists()
    make_samples(root / "plain", 2, size=(64, 48))                              # as tests call it: folder = root
    assert len(list((root / "plain").rglob("*.jpg"))) == 2


def test_run_state_from_the_shared_disk_is_checked(world):
    root, canary, before = world
    c = make_ctx(root.parent)
    disk = runstate.local_disk(c)
    record = {"run_id": "resize-1", "fleet": "f", "provider": "local", "workload": "resize", "src": "src",
              "dst": "out", "args": "", "started_at": time.time() - 100, "nodes": [{"name": "f-0", "shard": 0}]}
    runstate.save_run(disk, record, latest=True)
    assert runstate.load_run(c)["run_id"] == "resize-1"
    for latest in ("../../../canary\n", "/etc\n"):                   # LATEST names something else than a run
        disk.write_text(".fleetbook/runs/LATEST", latest)
        with pytest.raises(safefs.Refused):
            runstate.load_run(c)
    disk.write_text(".fleetbook/runs/LATEST", "resize-1\n")
    for key, value in (("dst", "../../canary"), ("src", "/etc"), ("nodes", [{"name": "../x"}]),
                       ("workload", "../../canary/x"), ("started_at", "yesterday"), ("args", ["--x"])):
        disk.write_json(".fleetbook/runs/resize-1/run.json", {**record, key: value})   # a node rewrote it
        with pytest.raises(Exception) as exc:
            runstate.load_run(c)
        assert "was it altered" in one_line(exc)
    disk.write_json(".fleetbook/runs/resize-1/run.json", record)
    node_dir = root / ".fleetbook" / "runs" / "resize-1" / "nodes" / "f-0"
    (node_dir / "heartbeat.json").symlink_to(canary / "run.json")     # not followed: no heartbeat
    assert runstate.node_files(c, "resize-1", "f-0") == (None, None)
    (node_dir / "heartbeat.json").unlink()
    (node_dir / "heartbeat.json").write_text(json.dumps({"updated_at": "soon", "done": [1], "rate_per_s": 2.0}))
    (node_dir / "exit.json").write_text(json.dumps({"code": "0", "summary": {"done": "many", "skipped": 3}}))
    beat, exit_ = runstate.node_files(c, "resize-1", "f-0")           # wrong types are dropped, not a crash
    assert beat == {"rate_per_s": 2.0} and exit_ == {"summary": {"skipped": 3}}
    (node_dir / "exit.json").unlink()
    beat, _ = runstate.node_files(c, "resize-1", "f-0")
    assert runstate.node_status(record, "f-0", beat, None, 30.0) == "lost"
    assert snapshot(canary) == before


@pytest.mark.parametrize("flag, value", [("--dst", "/tmp/fb-{}"), ("--dst", "../../../tmp/fb-{}"),
                                         ("--src", "../../etc"), ("--dst", "s3://bucket/out")])
def test_run_refuses_paths_that_leave_the_root_before_anything(tmp_path, flag, value):
    value = value.format(os.getpid())
    result = invoke_cli(tmp_path, "run", "--workload", "resize", flag, value, "--name", "nofleet")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and flag in result.stderr, result.stderr
    assert "no running fleet" not in result.stderr                   # checked first, at the task boundary
    assert not Path(f"/tmp/fb-{os.getpid()}").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving folders to another user needs root")
def test_folders_are_given_to_the_nodes_without_following_links(world):
    root, canary, before = world
    disk = safefs.Root(root)
    disk.mkdirs("out/a/b")
    (root / "out" / "a" / "x.jpg").write_bytes(b"x")
    (root / "out" / "a" / "to-canary").symlink_to(canary)            # planted inside a folder given earlier
    nobody = 65534
    disk.chown("out", nobody, nobody, tree=True)
    for d in ("out", "out/a", "out/a/b"):
        assert (root / d).stat().st_uid == nobody, d
    assert (root / "out" / "a" / "x.jpg").stat().st_uid == 0           # files stay as they are
    assert canary.stat().st_uid == 0 and (canary / "sub").stat().st_uid == 0
    (root / "link-out").symlink_to(canary)
    with pytest.raises(safefs.Refused):
        disk.chown("link-out/sub", nobody, nobody)
    assert all(p.stat().st_uid == 0 for p in [canary, *canary.rglob("*")])
    assert snapshot(canary) == before
