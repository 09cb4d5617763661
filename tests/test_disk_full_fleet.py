"""A shared disk that fills up during a run, on a real local fleet (root: the shared root is a small tmpfs).

Over sshfs the head's full disk reaches a node as EIO ("Input/output error"); the node says "shared disk full on
the head" (its statvfs over sshfs shows no space), and `run --wait` ends naming the full disk instead of a bare
"(failed)" or "(lost)", whether or not the node could still write its exit file on the full disk.
"""
from __future__ import annotations

import secrets
import subprocess

import pytest
from tests.support.fleet import ROOT, bring_up, make_ctx
from invoke.exceptions import Exit

from playbooks import progress, run, teardown
from playbooks.runs import state as runstate
from playbooks.providers import local

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(300),
              pytest.mark.skipif(not ROOT, reason="a tmpfs as the shared root needs root")]
NAME = "full" + secrets.token_hex(2)


@pytest.fixture(scope="module")
def ctx(fleet_base):
    from PIL import Image
    data = fleet_base / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "fbshared", str(data)], check=True)
    try:
        (data / "src").mkdir()
        noise = Image.effect_noise((300, 300), 90).convert("RGB")
        for i in range(24):
            noise.rotate(i * 15).save(data / "src" / f"n{i:02d}.jpg", quality=50)
        c = make_ctx(fleet_base, job__lost_after=4.0, job__poll=0.2)
        yield c
        teardown.teardown(c, name=NAME)
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_a_full_shared_disk_is_named_by_run_wait(ctx):
    bring_up(ctx, NAME, n=1)
    with pytest.raises(Exit) as exc:
        run.run_(ctx, workload="resize", src="src", dst="out", args="--size 900 --quality 100", name=NAME,
                 wait=True)
    msg = exc.value.message
    assert "\n" not in msg and "the shared disk on the head is full" in msg, msg
    _beat, exit_ = runstate.node_files(ctx, runstate.load_run(ctx)["run_id"], local.list_nodes(ctx, NAME)[0].name)
    if exit_ is not None and exit_.get("error"):          # the node could still write its exit file: its words
        assert exit_["error"].startswith("shared disk full on the head: "), exit_
        assert "shared disk full on the head" in msg
    snap = progress.snapshot(ctx, runstate.load_run(ctx))
    assert snap["done"] < snap["total"]
