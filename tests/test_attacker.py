"""A compromised node against the head, on a real local fleet as root.

The attacker holds what a node holds: the node's own key (``<node home>/.ssh/fleet_head``), the head's address
and its pinned host key.  With them it logs in to the head's sshd over SFTP (paramiko, exactly as a script on a
taken-over node would) and plants symlinks at every path below the shared root that the operator's side
writes, reads or deletes, each pointing at a canary folder OUTSIDE the shared root.  Then the operator runs
the tasks that touch those paths.  Each must either refuse with a one-line error or work inside the shared
root, and no file of the canary may change (its files are hashed before and after every step).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

import paramiko
import pytest
from tests.support.fleet import ROOT, bring_up, invoke_cli, make_ctx
from invoke.exceptions import Exit

from playbooks import demo, mount, progress, run, teardown
from playbooks.runs import state as runstate
from playbooks.providers import local
from playbooks.runs.samples import make_samples

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(300),
              pytest.mark.skipif(not ROOT, reason="the attack is on a head running as root (chroot, node users)")]
NAME = "atk" + secrets.token_hex(2)
NODE = f"{NAME}-0"


def hashes(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        out[rel] = "link" if p.is_symlink() else "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def canary(fleet_base):
    """A folder outside the shared root, shaped like what the links pretend to be, and its hashes."""
    top = fleet_base / "canary"
    for d in ("out/.failed", "src", "runs", "nodes"):
        (top / d).mkdir(parents=True)
    (top / "LATEST").write_text("canary-run\n")
    (top / "run.json").write_text(json.dumps({"run_id": "canary-run", "src": "src", "dst": "out", "nodes": []}))
    (top / "heartbeat.json").write_text(json.dumps({"node": NODE, "done": 424242, "updated_at": 4e9}))
    (top / "out" / "keep.jpg").write_bytes(b"\xff\xd8 precious output")
    (top / "out" / ".failed" / "c.json").write_text(json.dumps({"item": "CANARY-ITEM", "reason": "canary"}))
    make_samples(top / "src", 2, size=(96, 64))
    return top, hashes(top)


@pytest.fixture(scope="module")
def ctx(fleet_base, canary):
    c = make_ctx(fleet_base, job__lost_after=5.0, job__poll=0.2)
    make_samples(fleet_base / "data" / "src", 6, size=(160, 120))
    yield c
    teardown.teardown(c, name=NAME)


@pytest.fixture(scope="module")
def sftp(ctx):
    """The compromised node's SFTP session on the head, with nothing but what the node has."""
    bring_up(ctx, NAME, n=1)
    home = Path(local.list_nodes(ctx, NAME)[0].labels["home"])
    head = mount.head_for(ctx, NAME, "")                                 # where the node's mount logs in
    client = paramiko.SSHClient()
    client.load_host_keys(str(home / ".ssh" / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(head.host, port=head.port, username=head.user, key_filename=str(home / ".ssh" / "fleet_head"),
                   look_for_keys=False, allow_agent=False, timeout=20)
    session = client.open_sftp()
    yield Planter(session, head.remote_path.rstrip("/"), Path(ctx.config.shared.root))
    client.close()


class Planter:
    """Symlinks made over the node's SFTP session (paths relative to the shared root), and undone.

    Where the head does not let the node write at all (the shared root and the run state are root's, the nodes
    get only their output folders and their own state folder), SFTP refuses; the link is then made as root
    instead, as a node could on a head that let it (or one that found another way in), so that the operator's
    side is checked at every path all the same.  ``by_root`` lists those paths."""

    def __init__(self, session, top: str, local: Path):
        self.s, self.top, self.local = session, top, local
        self.moved: set[str] = set()
        self.by_root: set[str] = set()

    def _p(self, rel: str) -> str:
        return f"{self.top}/{rel}"

    def plant(self, rel: str, target: Path, sftp_only: bool = False) -> str:
        """Make ``rel`` a symlink to ``target`` (an absolute path on the head); "sftp" or "root" says how."""
        try:
            parts = rel.split("/")
            for k in range(1, len(parts)):
                try:
                    self.s.mkdir(self._p("/".join(parts[:k])))
                except OSError:
                    pass
            try:
                self.s.lstat(self._p(rel))
                self.s.rename(self._p(rel), self._p(rel) + ".moved")    # the real one, put aside
                self.moved.add(rel)
            except FileNotFoundError:
                pass
            self.s.symlink(str(target), self._p(rel))                    # rel -> target, an absolute path
            how = "sftp"
        except (PermissionError, FileNotFoundError):                    # not allowed here, or above it
            if sftp_only:
                raise
            path = self.local / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if rel not in self.moved and (path.exists() or path.is_symlink()):
                os.rename(path, f"{path}.moved")
                self.moved.add(rel)
            os.symlink(target, path)
            self.by_root.add(rel)
            how = "root"
        assert (self.local / rel).is_symlink()
        return how

    def undo(self, rel: str) -> None:
        path, moved = self.local / rel, Path(f"{self.local / rel}.moved")
        if path.is_symlink():
            path.unlink()
            if rel in self.moved:
                os.rename(moved, path)
        elif rel in self.moved:                                         # the head replaced the link by a file
            shutil.rmtree(moved) if moved.is_dir() and not moved.is_symlink() else moved.unlink()
        self.moved.discard(rel)


def refused_or_worked(call) -> str:
    """Run a task: "refused" (a one-line Exit that names the link or the path), or "worked"."""
    try:
        call()
    except Exit as exc:
        msg = exc.message or ""
        assert msg and "\n" not in msg, msg
        assert "symlink" in msg or "not valid" in msg, msg
        return "refused"
    return "worked"


def start(c, src="src", dst="out", wait=True):
    return lambda: run.run_(c, workload="resize", src=src, dst=dst, args="--size 32", name=NAME, wait=wait)


def test_the_node_really_holds_an_sftp_session(sftp, ctx):
    assert refused_or_worked(start(ctx)) == "worked"                    # a real run, nothing planted
    rid = runstate.load_run(ctx)["run_id"]
    own = f".fleetbook/runs/{rid}/nodes/{NODE}/probe"                    # the node's own state folder
    assert sftp.plant(own, Path("/etc/hostname"), sftp_only=True) == "sftp"
    assert os.readlink(Path(ctx.config.shared.root) / own) == "/etc/hostname"
    sftp.undo(own)


def test_run_state_links(sftp, ctx, canary, capsys):
    top, before = canary
    rid = runstate.load_run(ctx)["run_id"]
    plants = [  # (path below the shared root, its target, the tasks that touch it, what each may do)
        (".fleetbook", top, [start(ctx), lambda: progress.progress(ctx)], {"refused"}),
        (".fleetbook/runs", top, [start(ctx), lambda: progress.progress(ctx), lambda: run.stop(ctx, name=NAME)],
         {"refused"}),
        (f".fleetbook/runs/{rid}", top, [lambda: progress.progress(ctx, run_id=rid),
                                         lambda: run.stop(ctx, name=NAME, run_id=rid)], {"refused"}),
        (f".fleetbook/runs/{rid}/run.json", top / "run.json",
         [lambda: progress.progress(ctx, run_id=rid), lambda: run.stop(ctx, name=NAME, run_id=rid)], {"refused"}),
        (".fleetbook/runs/LATEST", top / "LATEST", [lambda: progress.progress(ctx)], {"refused"}),
        (".fleetbook/runs/LATEST", top / "LATEST", [start(ctx)], {"worked"}),   # replaced, not written through
        ("out", top / "out", [start(ctx), lambda: progress.progress(ctx, failed=True)], {"refused"}),
        ("deeper", top, [start(ctx, dst="deeper/out")], {"refused"}),
        ("src", top / "src", [start(ctx), lambda: progress.progress(ctx)], {"refused"}),
    ]
    for rel, target, calls, allowed in plants:
        sftp.plant(rel, target)
        for call in calls:
            assert refused_or_worked(call) in allowed, rel
            assert hashes(top) == before, f"the canary changed through {rel}"
        sftp.undo(rel)
    latest = Path(ctx.config.shared.root) / ".fleetbook" / "runs" / "LATEST"
    assert latest.is_file() and not latest.is_symlink() and latest.read_text().strip() != "canary-run"
    capsys.readouterr()


def test_what_nodes_write_is_read_as_data(sftp, ctx, canary, capsys):
    top, before = canary
    record = runstate.load_run(ctx)
    rid = record["run_id"]
    for rel, target in ((f".fleetbook/runs/{rid}/nodes/{NODE}/heartbeat.json", top / "heartbeat.json"),
                        (f".fleetbook/runs/{rid}/nodes/{NODE}", top / "nodes")):
        sftp.plant(rel, target)
        capsys.readouterr()
        progress.progress(ctx, json_=True)                              # works, without reading the link
        [node] = json.loads(capsys.readouterr().out)["nodes"]
        assert node["state"] != "running" and node["last_seen_s"] is None   # 424242 / 4e9 were never read
        sftp.undo(rel)
    sftp.plant("out/.failed", top / "out" / ".failed")
    progress.progress(ctx, failed=True)
    assert "CANARY-ITEM" not in capsys.readouterr().out
    sftp.undo("out/.failed")
    # an input that is a link out of the source: the node does not read it, and says why
    sftp.plant("src/00/evil.jpg", top / "src" / "00" / "img_00000.jpg")
    assert refused_or_worked(start(ctx, dst="out-evil")) == "worked"
    failures = runstate.fleetwork().read_failures(str(Path(ctx.config.shared.root) / "out-evil"))
    assert failures["00/evil.jpg"]["reason"] == "symlink-outside-src"
    assert not (Path(ctx.config.shared.root) / "out-evil" / "00" / "evil.jpg").exists()
    sftp.undo("src/00/evil.jpg")
    assert hashes(top) == before


def test_the_demo_folders(sftp, ctx, canary):
    top, before = canary
    for rel in ("demo", "demo/src", "demo/out", "demo/src/00"):
        sftp.plant(rel, top / ("src" if rel.endswith("00") else "out" if rel.endswith("out") else ""))
        assert refused_or_worked(lambda: demo.prepare(ctx, "demo/src", "demo/out", 3)) == "refused", rel
        assert hashes(top) == before, f"the canary changed through {rel}"
        sftp.undo(rel)
    assert refused_or_worked(lambda: demo.prepare(ctx, "demo/src", "demo/out", 3)) == "worked"


def test_the_cli_refuses_in_one_line(sftp, ctx, canary, fleet_base):
    top, before = canary
    sftp.plant(".fleetbook/runs", top)
    for args in (("progress",), ("stop", "--name", NAME),
                 ("run", "--workload", "resize", "--name", NAME, "--args", "--size 32")):
        result = invoke_cli(fleet_base, *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "is a symlink" in result.stderr, result.stderr
    sftp.undo(".fleetbook/runs")
    assert hashes(top) == before


def test_teardown_through_planted_links(sftp, ctx, canary):
    top, before = canary
    sftp.plant(".fleetbook/runs/LATEST", top / "LATEST")
    assert refused_or_worked(lambda: teardown.teardown(ctx, name=NAME)) == "worked"
    assert local.list_nodes(ctx, NAME) == []
    assert hashes(top) == before
