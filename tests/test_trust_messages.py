"""What the operator is told about data it does not trust and failures it did not cause: names from the shared disk
printed as text (never as markup), a full shared disk, a changed host key, and a head that no node reaches."""
from __future__ import annotations

import getpass
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from tests.support.cloud import FLEET
from tests.support.fleet import invoke_cli, make_ctx
from invoke.exceptions import Exit
from rich.console import Console

from playbooks import progress
from playbooks.ssh import fanout as remote
from playbooks.runs import state as runstate
from playbooks.providers import Node


def a_run(c, nodes: dict, exits: dict | None = None, started_ago: float = 100.0) -> dict:
    """A run record and its nodes' heartbeats (name -> seconds since the last one) on the shared disk."""
    now = time.time()
    disk = runstate.local_disk(c)
    record = {"run_id": "resize-20250101-000000-ab12", "fleet": "f", "provider": "local", "workload": "resize",
              "src": "src", "dst": "out", "args": "", "started_at": now - started_ago,
              "nodes": [{"name": n, "shard": i} for i, n in enumerate(nodes)]}
    disk.mkdirs("src")
    runstate.save_run(disk, record, latest=True)
    for n, ago in nodes.items():
        if ago is not None:
            runstate.write_node_file(c, record["run_id"], n, "heartbeat.json",
                                     {"node": n, "done": 1, "failed": 0, "rate_per_s": 1.0,
                                      "started_at": now - started_ago, "updated_at": now - ago})
    for n, rec in (exits or {}).items():
        runstate.write_node_file(c, record["run_id"], n, "exit.json", rec)
    return record


def test_failed_items_with_markup_in_their_names_print_literally(tmp_path):
    c = make_ctx(tmp_path)
    a_run(c, {"f-0": 1.0})
    fw = runstate.fleetwork()
    dst = str(tmp_path / "data" / "out")
    fw.record_failure(dst, "m[/b].jpg", "not-an-image", "[bold red]boom[/]", node="[i]node[/i]")
    fw.record_failure(dst, "[link=file:///etc]x[/link].png", "empty", "", node="f-0")
    result = invoke_cli(tmp_path, "progress", "--failed")
    assert result.returncode == 0, result.stderr
    for text in ("m[/b].jpg", "[bold red]boom[/]", "[i]node[/i]", "[link=file:///etc]x[/link].png"):
        assert text in result.stdout, result.stdout


def test_the_progress_table_prints_node_names_and_run_ids_as_text(tmp_path):
    c = make_ctx(tmp_path)
    snap = progress.snapshot(c, a_run(c, {"f-0": 1.0}))
    snap["run_id"], snap["nodes"][0]["name"] = "r[/]", "[red]n[/red]"    # such names are refused on the disk
    console = Console(record=True, width=200)
    console.print(progress.table(snap))
    text = console.export_text()
    assert "[red]n[/red]" in text and "run r[/]" in text


def test_run_wait_names_a_full_shared_disk(tmp_path):
    c = make_ctx(tmp_path, job__lost_after=30.0)
    why = "shared disk full on the head: 0 bytes free below /mnt/fleetbook/out (Input/output error)"
    record = a_run(c, {"f-0": 3.0, "f-1": 2.0}, exits={"f-0": {"code": 3, "error": why}, "f-1": {"code": 0}})
    with pytest.raises(Exit) as exc:
        progress.wait_until_finished(c, record)
    msg = exc.value.message
    assert "\n" not in msg and f"f-0 (failed: {why})" in msg and "f-1" not in msg
    assert "the shared disk on the head is full" in msg


@pytest.mark.skipif(os.geteuid() != 0, reason="a real full filesystem as the shared root needs a tmpfs (root)")
def test_a_full_shared_root_is_named_even_when_the_nodes_could_not_say_so(tmp_path):
    base = tmp_path / "base"
    (base / "data").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "fbfull", str(base / "data")], check=True)
    try:
        c = make_ctx(base, job__lost_after=5.0)
        record = a_run(c, {"f-0": 40.0, "f-1": 22.0})      # heartbeats stopped (they could not be written)
        with open(base / "data" / "filler", "wb") as f:   # the disk fills up
            try:
                f.write(b"\0" * (1 << 20))
            except OSError:
                pass
        with pytest.raises(Exit) as exc:
            progress.wait_until_finished(c, record)
        assert "the shared disk on the head is full" in exc.value.message
    finally:
        subprocess.run(["umount", "-l", str(base / "data")], check=False)


def test_every_node_lost_at_once_points_at_the_head(tmp_path):
    c = make_ctx(tmp_path, job__lost_after=10.0)
    record = a_run(c, {"f-0": 61.0, "f-1": 60.2, "f-2": 59.5})          # all silent since the same moment
    with pytest.raises(Exit) as exc:
        progress.wait_until_finished(c, record)
    msg = exc.value.message
    assert "the head (its SFTP sshd, its disk or the tunnel to it) is the likely cause" in msg and "\n" not in msg
    result = invoke_cli(tmp_path, "progress")
    assert "likely cause" in " ".join(result.stdout.split()), result.stdout         # the table says so too


@pytest.mark.parametrize("beats", [
    {"f-0": 300.0, "f-1": 30.0, "f-2": 12.0},       # lost one after another: the nodes, not the head
    {"f-0": 40.0, "f-1": 40.0, "f-2": 1.0},         # one node still reports: the head is reachable
    {"f-0": 40.0},                                  # one node: nothing to compare
])
def test_nodes_lost_one_by_one_do_not_blame_the_head(tmp_path, beats):
    c = make_ctx(tmp_path, job__lost_after=10.0)
    snap = progress.snapshot(c, a_run(c, beats))
    assert runstate.common_cause(snap["nodes"], snap["head_free_bytes"]) is None


def test_a_changed_host_key_is_named(tmp_path, fleet_sshd):
    port, host_key, _ = fleet_sshd
    c = make_ctx(tmp_path, fleet__ssh_timeout=10.0)
    fdir = Path(c.config.fleet.state_dir) / FLEET
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    node = Node(name="n0", host="127.0.0.1", port=port, user=getpass.getuser())
    (fdir / "known_hosts").write_text(f"[127.0.0.1]:{port} {wrong}\n")   # pinned: not what the machine offers
    [result] = remote.fan_out(c, FLEET, [node], lambda conn, n: remote.run_checked(conn, "true"), step="probe")
    assert not result.ok and result.error.startswith("host key of 127.0.0.1 does not match the fleet's known_hosts")
    assert "SHA256:" in result.error and "\n" not in result.error
    # and a node whose own onward ssh (to the head, as sshfs makes it) meets a changed key: ssh's verdict, not
    # its last words ("Connection reset by peer")
    (fdir / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    bad_kh = tmp_path / "node_known_hosts"
    bad_kh.write_text(f"[127.0.0.1]:{port} {wrong}\n")
    onward = (f"ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={bad_kh} "
              f"-i {fdir / 'id_ed25519'} -p {port} {getpass.getuser()}@127.0.0.1 true")
    [result] = remote.fan_out(c, FLEET, [node], lambda conn, n: remote.run_checked(conn, onward), step="mount")
    assert not result.ok
    assert f"host key of [127.0.0.1]:{port} does not match the node's known_hosts" in result.error, result.error
    assert remote.error_line("one\nread: Connection reset by peer\n") == "read: Connection reset by peer"


def test_json_output_shows_no_internal_keys(tmp_path):
    c = make_ctx(tmp_path)
    a_run(c, {"f-0": 1.0})
    result = invoke_cli(tmp_path, "progress", "--json")
    snap = json.loads(result.stdout)
    assert "head_free_bytes" not in snap and snap["total"] == 0
    assert [set(n) for n in snap["nodes"]] == [{"name", "rate_per_s", "last_seen_s", "state", "cause"}]
    assert snap["nodes"][0]["cause"] is None                        # a running node has none


def test_json_output_names_why_a_node_ended(tmp_path):
    c = make_ctx(tmp_path, job__lost_after=30.0)
    why = "shared disk full on the head: 0 bytes free below /mnt/fleetbook/out (Input/output error)"
    a_run(c, {"f-0": 3.0, "f-1": 2.0}, exits={"f-0": {"code": 3, "error": why}, "f-1": {"code": 0}})
    result = invoke_cli(tmp_path, "progress", "--json")
    assert result.returncode == 0, result.stderr
    nodes = {n["name"]: n for n in json.loads(result.stdout)["nodes"]}
    assert (nodes["f-0"]["state"], nodes["f-0"]["cause"]) == ("failed", why)
    assert (nodes["f-1"]["state"], nodes["f-1"]["cause"]) == ("done", None)
