"""The gcp provider against tests/support/fake_gce.py, through the real google-cloud-compute client."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from tests.support.cloud import FLEET, free_port, make_context
from playbooks.providers import ProviderError
from playbooks.providers import FleetSpec, NodesNotReady, gcp

ZONE_OPS = "/zones/us-central1-a/operations/"


def bulk_bodies(gce):
    return [b for p, b in gce.bodies if p.endswith("/instances/bulkInsert")]


def test_create_sends_one_bulk_insert_with_spot_labels_ttl(gcp_ctx, gce):
    gce.op_polls = 2
    nodes = gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=3, ttl_hours=2))
    assert sorted(n.name for n in nodes) == ["demo-0001", "demo-0002", "demo-0003"]
    (body,) = bulk_bodies(gce)
    assert (body["count"], body["minCount"], body["namePattern"]) == ("3", "3", "demo-####")
    props = body["instanceProperties"]
    sched = props["scheduling"]
    assert sched["provisioningModel"] == "SPOT"
    assert sched["instanceTerminationAction"] == "DELETE"
    assert sched["maxRunDuration"]["seconds"] == str(2 * 3600)
    labels = props["labels"]
    assert labels["fleet"] == FLEET and labels["fleetbook-spot"] == "true"
    assert abs(int(labels["fleetbook-deadline"]) - (time.time() + 7200)) < 60
    meta = {i["key"]: i["value"] for i in props["metadata"]["items"]}
    pub = Path(gcp_ctx.config.fleet.state_dir) / FLEET / "id_ed25519.pub"
    assert meta["ssh-keys"] == f"{gcp_ctx.config.gcp.user}:{pub.read_text().strip()}"
    assert meta["enable-guest-attributes"] == "TRUE" and meta["startup-script"].startswith("#!/bin/sh")
    assert props["tags"]["items"] == ["fleetbook"]
    # the extended operation was polled (twice) on the fake, not on compute.googleapis.com
    assert gce.saw(ZONE_OPS, "GET") == 2
    assert gce.firewalls["fleetbook-ssh"]["sourceRanges"] == ["127.0.0.1/32"]


def test_create_is_idempotent_and_min_count(gcp_ctx, gce):
    gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=2, spot=False))
    nodes = gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=5, min_count=3, spot=False))
    assert len(nodes) == 5
    first, second = bulk_bodies(gce)
    assert first["instanceProperties"]["scheduling"]["provisioningModel"] == "STANDARD"
    assert (second["count"], second["minCount"]) == ("3", "1")   # gap 3, needs 1 more to reach --min 3
    gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=5))
    assert len(bulk_bodies(gce)) == 2                            # nothing missing: nothing sent


def test_list_by_label_list_all_and_terminate(gcp_ctx, gce):
    gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=2))
    gcp.create(gcp_ctx, FleetSpec(name="other", count=1))
    assert {n.name for n in gcp.list_nodes(gcp_ctx, FLEET)} == {"demo-0001", "demo-0002"}
    assert {n.labels["fleet"] for n in gcp.list_all(gcp_ctx)} == {FLEET, "other"}
    assert gce.saw("/aggregated/instances") == 1
    assert gcp.terminate(gcp_ctx, FLEET) == 2
    assert gcp.list_nodes(gcp_ctx, FLEET) == []
    assert gcp.terminate(gcp_ctx, FLEET) == 0                    # already gone is fine
    assert [n.name for n in gcp.list_nodes(gcp_ctx, "other")] == ["other-0001"]


def test_dry_run_sends_nothing(gcp_ctx, gce, capsys):
    from playbooks import image
    assert gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=4, dry_run=True)) == []
    assert gce.bodies == [] and gce.instances == {}
    out = capsys.readouterr().out
    assert "bulkInsert" in out and '"namePattern": "demo-####"' in out and "firewalls" in out
    assert image.bake(gcp_ctx, provider="gcp", dry_run=True) is None
    assert gce.bodies == [] and "would run step 1" in capsys.readouterr().out
    gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=2))
    sent = len(gce.bodies)
    assert gcp.terminate(gcp_ctx, FLEET, dry_run=True) == 2
    assert len(gce.instances) == 2 and gce.saw("/instances/demo", "DELETE") == 0 and len(gce.bodies) == sent
    gcp.kill_node(gcp_ctx, FLEET, "demo-0001")                 # a preemption: gone without waiting
    assert gce.saw("/instances/demo-0001", "DELETE") == 1


@pytest.mark.parametrize("bad", ["Demo", "9lives", "a_b", "x" * 60, "end-"])
def test_invalid_fleet_name_fails_before_any_request(gcp_ctx, gce, bad):
    with pytest.raises(ProviderError, match="invalid fleet name"):
        gcp.create(gcp_ctx, FleetSpec(name=bad, count=1))
    assert gce.requests == []


def test_capacity_503_on_request_leaves_nothing(gcp_ctx, gce):
    gce.http_error_next = (503, "ZONE_RESOURCE_POOL_EXHAUSTED")
    with pytest.raises(ProviderError, match="no capacity or quota for 3 x e2-standard-2 \\(spot\\) in us-central1-a .*"
                                  "ZONE_RESOURCE_POOL_EXHAUSTED.*Widen gcp.zones"):
        gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=3))
    assert gce.instances == {}


def test_capacity_below_min_count_in_operation(gcp_ctx, gce):
    gce.capacity["us-central1-a"] = 2
    with pytest.raises(ProviderError, match="no capacity or quota"):
        gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=3))
    assert gce.instances == {}
    assert len(gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=3, min_count=2))) == 2


def test_partial_bulk_failure_is_cleaned_up_below_min(gcp_ctx, gce, capsys):
    gce.fail_after = 1          # one VM starts, then the operation fails
    with pytest.raises(ProviderError, match="deleted the 1 node"):
        gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=3))
    assert gce.instances == {}
    gce.fail_after = 2
    nodes = gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=3, min_count=2))
    assert len(nodes) == 2 and "2 of 3 nodes started" in capsys.readouterr().out


def test_no_credentials_is_one_line(isolated_env, tmp_path):
    c = make_context({"fleet": {"state_dir": str(tmp_path)}, "gcp": {"project": "p"}})
    with pytest.raises(ProviderError, match="no GCP credentials"):
        gcp.list_nodes(c, FLEET)


def test_wait_ready_pins_host_key_from_guest_attributes(gcp_ctx, gce, fleet_sshd):
    port, host_key, _ = fleet_sshd
    gce.host_keys = [host_key]
    gcp_ctx.config.gcp.ssh_port = port
    gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=2))
    nodes = gcp.wait_ready(gcp_ctx, FLEET, 20)
    assert len(nodes) == 2 and {n.port for n in nodes} == {port}
    known = (Path(gcp_ctx.config.fleet.state_dir) / FLEET / "known_hosts").read_text()
    assert f"[127.0.0.1]:{port} {host_key}" in known
    assert gce.saw("getGuestAttributes") >= 1
    gcp.terminate(gcp_ctx, FLEET)                              # deleted nodes' addresses are forgotten
    assert f"[127.0.0.1]:{port}" not in (Path(gcp_ctx.config.fleet.state_dir) / FLEET / "known_hosts").read_text()


def test_wait_ready_accepts_new_key_when_the_cloud_gives_none(gcp_ctx, gce, fleet_sshd, capsys):
    port, host_key, _ = fleet_sshd
    gce.host_keys = []                                         # no guest attributes, no serial output
    gcp_ctx.config.gcp.ssh_port = port
    gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=1))
    assert len(gcp.wait_ready(gcp_ctx, FLEET, 3)) == 1
    assert "pinned on first use" in capsys.readouterr().out
    known = (Path(gcp_ctx.config.fleet.state_dir) / FLEET / "known_hosts").read_text()
    assert f"[127.0.0.1]:{port} {host_key}" in known


def test_wait_ready_rejects_a_host_key_that_does_not_match(gcp_ctx, gce, fleet_sshd):
    port, _, _ = fleet_sshd
    gce.host_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKt6j7a1Gx6Yq6ZfVv3g2a5pJ2Jm0bq2p3mQ3yJ2m0Xs"]
    gcp_ctx.config.gcp.ssh_port = port
    gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=1))
    with pytest.raises(NodesNotReady, match="demo-0001.*(BadHostKey|not found in known_hosts|does not match)"):
        gcp.wait_ready(gcp_ctx, FLEET, 3)


def test_bake_end_to_end_then_skip_then_used(gcp_ctx, gce, fleet_sshd, tmp_path):
    from playbooks import image
    from playbooks.ssh import keys as sshkeys
    port, host_key, authorized = fleet_sshd
    gce.host_keys = [host_key]
    gcp_ctx.config.gcp.ssh_port = port
    marker = tmp_path / "baked"
    steps = [f"echo python sshfs > {marker}", "true"]
    gcp_ctx.config.image.steps = steps
    digest = image.steps_hash(steps, gcp.base_image(gcp_ctx), "gcp")
    pub = sshkeys.keypair(Path(gcp_ctx.config.fleet.state_dir) / f"bake-{digest[:8]}" / "id_ed25519", "bake")
    with authorized.open("a") as f:
        f.write(pub + "\n")
    name = image.bake(gcp_ctx, provider="gcp")
    assert marker.read_text().strip() == "python sshfs"       # the steps ran over SSH on the template
    img = gce.images[("fake-project", name)]
    assert img["labels"]["fleetbook-image-hash"] == digest and img["family"] == "fleetbook"
    assert img["sourceDisk"].endswith(f"/disks/bake-{digest[:8]}-0001")
    assert gce.instances == {}                                 # the template was deleted
    assert gce.saw("/global/operations/", "GET") >= 1
    assert image.bake(gcp_ctx, provider="gcp") == name         # same steps: skipped
    assert len([p for p, _ in gce.bodies if p.endswith("/global/images")]) == 1
    gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=1))
    disk = bulk_bodies(gce)[-1]["instanceProperties"]["disks"][0]["initializeParams"]
    assert disk["sourceImage"] == f"projects/fake-project/global/images/{name}"


def test_fleet_tasks_drive_the_gcp_provider(gcp_ctx, gce, fleet_sshd, capsys):
    from playbooks import fleet
    port, host_key, _ = fleet_sshd
    gce.host_keys = [host_key]
    gcp_ctx.config.gcp.ssh_port = port
    gcp_ctx.config.fleet.ready_timeout = 20.0
    fleet.create(gcp_ctx, n=2, name=FLEET, provider="gcp", ttl=1.0)
    out = capsys.readouterr().out
    assert "2 x e2-standard-2 (spot)" in out and "2 created" in out
    assert len(bulk_bodies(gce)) == 1
    record = {"fleet": FLEET, "nodes": [{"name": "demo-0001"}, {"name": "demo-0002"}]}
    assert gcp.cost_so_far(gcp_ctx, record, 10.0) is not None
    fleet.down(gcp_ctx, name=FLEET, provider="gcp")
    assert gce.instances == {} and "2 node(s) removed" in capsys.readouterr().out


def test_head_reverse_tunnel_serves_the_shared_disk(gcp_ctx, gce, fleet_sshd, head_root):
    import subprocess

    from playbooks.ssh.ports import banner
    port, host_key, authorized = fleet_sshd
    gce.host_keys = [host_key]
    tport = free_port()  # noqa: F405
    gcp_ctx.config.gcp.ssh_port = port
    gcp_ctx.config.gcp.tunnel_port = tport
    gcp_ctx.config.shared.root = str(head_root)
    gcp_ctx.config.local.base_address = "127.0.9.10"
    gcp_ctx.config.local.head_port = free_port()  # noqa: F405
    (head_root / "hello.txt").write_text("hi")
    gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=1))
    gcp.wait_ready(gcp_ctx, FLEET, 20)
    try:
        head = gcp.head(gcp_ctx, FLEET)
        assert (head.host, head.port) == ("127.0.0.1", tport)
        home = authorized.parent / "home"                      # the node's $HOME
        assert (home / ".ssh" / "fleet_head").stat().st_mode & 0o077 == 0
        assert f"[127.0.0.1]:{tport} ssh-ed25519 " in (home / ".ssh" / "known_hosts").read_text()
        for _ in range(100):
            if banner("127.0.0.1", tport, 0.5):
                break
            time.sleep(0.05)
        # what the node's sshfs does: SFTP through the tunnel with its key and the pinned head key
        out = subprocess.run(
            ["sftp", "-b", "-", "-F", "/dev/null", "-i", str(home / ".ssh" / "fleet_head"), "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={home / '.ssh' / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
             "-P", str(tport), f"{head.user}@127.0.0.1:{head.remote_path}"],
            input="ls\n", capture_output=True, text=True, timeout=20)
        assert "hello.txt" in out.stdout, out.stderr
        assert gcp.head(gcp_ctx, FLEET) == head                # idempotent: the live tunnel is kept
    finally:
        assert gcp.stop_head(gcp_ctx, FLEET) == 1
        assert not banner("127.0.0.1", tport, 0.5)            # the tunnel is gone
    gcp.terminate(gcp_ctx, FLEET)


# --- the head instance (gcp.head / --head instance) ------------------------------------------------------

def head_inserts(gce):
    return [b for p, b in gce.bodies if p.endswith("/zones/us-central1-a/instances")]


def test_head_instance_is_created_once_on_demand_and_excluded_from_nodes(gcp_ctx, gce):
    gcp_ctx.config.gcp.head_machine_type = "e2-standard-4"
    nodes = gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=2, ttl_hours=2, head="instance"))
    assert sorted(n.name for n in nodes) == ["demo-0001", "demo-0002"]
    assert len(bulk_bodies(gce)) == 1
    (head,) = head_inserts(gce)
    assert head["name"] == "demo-head" and head["machineType"].endswith("/machineTypes/e2-standard-4")
    assert head["labels"]["fleet"] == FLEET and head["labels"]["role"] == "head"
    assert head["labels"]["fleetbook-spot"] == "false"
    sched = head["scheduling"]
    assert sched["provisioningModel"] == "STANDARD" and sched["maxRunDuration"]["seconds"] == str(7200)
    assert sched["instanceTerminationAction"] == "STOP"      # its TTL stops it: the shared root stays (keep.py)
    assert head["disks"][0]["initializeParams"]["diskSizeGb"] == "100"
    assert sorted(head["tags"]["items"]) == ["fleetbook", "fleetbook-head"]
    meta = {i["key"]: i["value"] for i in head["metadata"]["items"]}
    node_pub = (Path(gcp_ctx.config.fleet.state_dir) / FLEET / "node_ed25519.pub").read_text().strip()
    script = meta["startup-script"]
    assert f"restrict {node_pub}" in script and "ChrootDirectory /srv/fleetbook" in script
    assert "ForceCommand internal-sftp" in script and "Match User fleetsftp" in script
    assert meta["ssh-keys"].endswith((Path(gcp_ctx.config.fleet.state_dir) / FLEET / "id_ed25519.pub")
                                     .read_text().strip())
    assert gce.firewalls["fleetbook-head"]["sourceTags"] == ["fleetbook"]
    assert gce.firewalls["fleetbook-head"]["targetTags"] == ["fleetbook-head"]
    # nodes are workers only; the head is in list_all and goes with terminate
    assert {n.name for n in gcp.list_nodes(gcp_ctx, FLEET)} == {"demo-0001", "demo-0002"}
    assert "demo-head" in {n.name for n in gcp.list_all(gcp_ctx)}
    assert gcp.find_head(gcp_ctx, FLEET).node.name == "demo-head"
    # idempotent: a second create makes neither nodes nor a second head; growing adds nodes only
    gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=2, head="instance"))
    assert len(bulk_bodies(gce)) == 1 and len(head_inserts(gce)) == 1
    assert len(gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=3, head="instance"))) == 3
    assert len(head_inserts(gce)) == 1
    assert gcp.terminate(gcp_ctx, FLEET) == 4
    assert gce.instances == {}


def test_head_instance_dry_run_prints_both_requests_and_sends_nothing(gcp_ctx, gce, capsys):
    assert gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=2, dry_run=True, head="instance")) == []
    assert gce.bodies == [] and gce.instances == {}
    out = capsys.readouterr().out
    assert "instances/bulkInsert" in out and "zones/us-central1-a/instances\n" in out
    assert '"name": "demo-head"' in out and '"provisioningModel": "STANDARD"' in out and "fleetbook-head" in out


def test_head_setting_and_bad_value(gcp_ctx, gce):
    gcp_ctx.config.gcp.head = "instance"
    gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=1))
    assert len(head_inserts(gce)) == 1
    with pytest.raises(ProviderError, match="choose tunnel or instance"):
        gcp.create(gcp_ctx, FleetSpec(name="other", count=1, head="vm"))


def test_failed_head_creation_deletes_the_new_nodes(gcp_ctx, gce):
    gce.capacity["us-central1-a"] = 2          # the two nodes fit, the head does not
    with pytest.raises(ProviderError, match="could not create the head instance.*deleted it and the 2 node"):
        gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=2, head="instance"))
    assert gce.instances == {}


def test_fleet_create_head_option_dry_run_and_tunnel_fleets_stay_local(gcp_ctx, gce, capsys):
    from playbooks import fleet
    from playbooks.runs import disk as rundisk
    fleet.create(gcp_ctx, n=2, name=FLEET, provider="gcp", dry_run=True, head="instance")
    out = " ".join(capsys.readouterr().out.split())
    assert "+ head instance 1 x e2-standard-2 (on-demand, 100 GB disk) at $0.0670/h" in out
    assert '"name": "demo-head"' in out and "would create 2" in out and gce.instances == {}
    with pytest.raises(Exit, match="--head is for cloud fleets"):
        fleet.create(gcp_ctx, n=1, name=FLEET, provider="local", head="instance")
    gcp.create(gcp_ctx, FleetSpec(name=FLEET, count=1))          # the default: a tunnel head, no head instance
    assert gcp.find_head(gcp_ctx, FLEET) is None
    assert rundisk.head_of(gcp_ctx, "gcp", FLEET) is None           # run state and progress stay on this disk
