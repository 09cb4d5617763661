"""Spot capacity across zones and machine types: one regionInstances.bulkInsert, against tests/support/fake_gce.py."""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from tests.support.cloud import FLEET
from playbooks.providers import ProviderError
from playbooks.providers import FleetSpec, gcp
from playbooks.providers import cloud as cc

A, B, C, F = (f"us-central1-{x}" for x in "abcf")
E2, N2 = "e2-standard-2", "n2-standard-2"
REGIONAL = "/regions/us-central1/instances/bulkInsert"


@pytest.fixture
def ctx(gcp_ctx):
    gcp_ctx.config.gcp.zones = f"{A},{B},{C}"          # as from INVOKE_GCP_ZONES
    gcp_ctx.config.gcp.machine_types = [E2, N2]        # as from invoke.yaml
    return gcp_ctx


def regional_bodies(gce):
    return [b for p, b in gce.bodies if p.endswith(REGIONAL)]


def zonal_creates(gce):
    return [p for p, _ in gce.bodies if "/zones/" in p and "/instances" in p]


def placed(nodes):
    return Counter(n.labels[cc.ZONE_KEY] for n in nodes), Counter(n.labels[cc.TYPE_KEY] for n in nodes)


def test_one_regional_request_places_20_nodes_over_3_zones_and_2_types(ctx, gce):
    gce.op_polls = 2
    gce.capacity = {A: 8, (A, E2): 4, B: 7, (C, E2): 0}
    nodes = gcp.create(ctx, FleetSpec(name=FLEET, count=20, ttl_hours=2))
    assert len(nodes) == 20 and len({n.name for n in nodes}) == 20
    # one create call for the whole fleet, none zonal; the region operation was polled on the fake
    assert gce.saw(REGIONAL, "POST") == 1 and zonal_creates(gce) == []
    assert gce.saw("/regions/us-central1/operations/", "GET") == 2
    (body,) = regional_bodies(gce)
    assert (body["count"], body["minCount"], body["namePattern"]) == ("20", "20", "demo-####")
    policy = body["locationPolicy"]
    assert policy["targetShape"] == "ANY"
    assert {k: v["preference"] for k, v in policy["locations"].items()} == {
        f"zones/{A}": "ALLOW", f"zones/{B}": "ALLOW", f"zones/{C}": "ALLOW", f"zones/{F}": "DENY"}
    (selection,) = body["instanceFlexibilityPolicy"]["instanceSelections"].values()
    assert selection["machineTypes"] == [E2, N2]
    props = body["instanceProperties"]
    assert "machineType" not in props                 # the selection says which types
    sched = props["scheduling"]
    assert sched["provisioningModel"] == "SPOT" and sched["instanceTerminationAction"] == "DELETE"
    assert sched["maxRunDuration"]["seconds"] == str(7200)
    meta = {i["key"]: i["value"] for i in props["metadata"]["items"]}
    assert meta["ssh-keys"].startswith(f"{ctx.config.gcp.user}:ssh-ed25519 ")
    # where the cloud had room: A holds 8 (4 of them e2), B 7, C only n2; F is denied and never used
    zones, types = placed(nodes)
    assert zones == {A: 8, B: 7, C: 5} and types == {E2: 11, N2: 9}
    by_zone = Counter((n.labels[cc.ZONE_KEY], n.labels[cc.TYPE_KEY]) for n in nodes)
    assert by_zone[(A, E2)] == 4 and by_zone[(A, N2)] == 4 and by_zone[(C, N2)] == 5
    for (zone, _), inst in gce.instances.items():
        assert inst["labels"]["fleet"] == FLEET and inst["labels"]["fleetbook-spot"] == "true"
        assert abs(int(inst["labels"]["fleetbook-deadline"]) - (time.time() + 7200)) < 60
        assert inst["scheduling"]["provisioningModel"] == "SPOT" and zone != F


def test_refill_after_losing_5_sends_one_request_for_5_and_down_leaves_0(ctx, gce, capsys):
    from playbooks import fleet
    gce.capacity = {A: 10, B: 6}
    first = gcp.create(ctx, FleetSpec(name=FLEET, count=20))
    assert placed(first)[0] == {A: 10, B: 6, C: 4}
    lost = [n.name for n in first if n.labels[cc.ZONE_KEY] in (A, C)][:5]
    for name in lost:                                   # preempted: GCE deletes them (instanceTerminationAction)
        gce.preempt(name)
    assert len(gcp.list_nodes(ctx, FLEET)) == 15
    nodes = gcp.create(ctx, FleetSpec(name=FLEET, count=20))
    assert len(nodes) == 20 and len({n.name for n in nodes}) == 20
    assert len(regional_bodies(gce)) == 2 and zonal_creates(gce) == []
    assert (regional_bodies(gce)[1]["count"], regional_bodies(gce)[1]["minCount"]) == ("5", "5")
    gcp.create(ctx, FleetSpec(name=FLEET, count=20))     # nothing missing: nothing sent
    assert len(regional_bodies(gce)) == 2
    fleet.down(ctx, name=FLEET, provider="gcp")
    assert gce.instances == {} and "20 node(s) removed" in capsys.readouterr().out
    assert gcp.list_nodes(ctx, FLEET) == []


def test_every_allowed_zone_exhausted_is_one_line_and_leaves_nothing(ctx, gce):
    gce.capacity = {A: 0, B: 0, C: 0}                  # F has room, but it is not allowed
    with pytest.raises(ProviderError) as err:
        gcp.create(ctx, FleetSpec(name=FLEET, count=6))
    msg = err.value.message
    assert "\n" not in msg
    assert msg.startswith(f"GCP has no capacity or quota for 6 x {{{E2}, {N2}}} (spot) in {{{A}, {B}, {C}}} "
                          "(tried 3 zones x 2 types: ZONE_RESOURCE_POOL_EXHAUSTED")
    assert "nothing was left running. Widen gcp.zones (more zones of us-central1) or gcp.machine_types" in msg
    assert gce.instances == {} and len(regional_bodies(gce)) == 1


def test_partial_creation_below_min_is_deleted_in_every_zone_and_above_min_kept(ctx, gce, capsys):
    gce.capacity = {A: 2, B: 1}
    gce.fail_after = 3                                  # 2 VMs in A and 1 in B start, then the operation fails
    with pytest.raises(ProviderError, match="deleted the 3 node"):
        gcp.create(ctx, FleetSpec(name=FLEET, count=6))
    assert gce.instances == {}
    assert {p.split("/")[6] for m, p in gce.requests if m == "DELETE"} == {A, B}
    gce.capacity = {A: 3, B: 2, C: 1}
    nodes = gcp.create(ctx, FleetSpec(name=FLEET, count=10, min_count=5))
    assert len(nodes) == 6 and placed(nodes)[0] == {A: 3, B: 2, C: 1}
    assert regional_bodies(gce)[-1]["minCount"] == "5"
    assert "6 of 10 nodes started" in capsys.readouterr().out


def test_dry_run_prints_the_regional_request_and_sends_nothing(ctx, gce, capsys):
    from playbooks import fleet
    fleet.create(ctx, n=20, name=FLEET, provider="gcp", dry_run=True)
    assert gce.bodies == [] and gce.instances == {}
    assert {m for m, _ in gce.requests} == {"GET"}
    out = capsys.readouterr().out
    assert "cost: 20 x {e2-standard-2, n2-standard-2} (spot) at $0.0201-0.0237/h = $0.40-0.47/h" in " ".join(out.split())
    head, _, rest = out.partition("[dry run] would send POST projects/fake-project/regions/us-central1/instances"
                                  "/bulkInsert\n")
    body = json.loads(rest[:rest.index("\n}\n") + 2])
    assert body["locationPolicy"]["locations"][f"zones/{F}"]["preference"] == "DENY"
    assert body["instanceFlexibilityPolicy"]["instanceSelections"]["fleetbook"]["machineTypes"] == [E2, N2]
    assert body["count"] == "20" and "would create 20" in rest


@pytest.mark.parametrize("shape, capacity, expected", [
    ("BALANCED", {}, {A: 2, B: 2, C: 2}),
    ("ANY_SINGLE_ZONE", {A: 5}, {B: 6}),
    ("ANY", {A: 5}, {A: 5, B: 1}),
])
def test_target_shape_is_sent_and_followed(ctx, gce, shape, capacity, expected):
    ctx.config.gcp.target_shape = shape
    ctx.config.gcp.machine_types = ""                   # one type, several zones: still regional
    gce.capacity = capacity
    nodes = gcp.create(ctx, FleetSpec(name=FLEET, count=6))
    (body,) = regional_bodies(gce)
    assert body["locationPolicy"]["targetShape"] == shape and "instanceFlexibilityPolicy" not in body
    assert body["instanceProperties"]["machineType"] == E2
    assert placed(nodes) == (expected, {E2: 6})


@pytest.mark.parametrize("setting, value, error", [
    ("target_shape", "SPREAD", "gcp.target_shape is 'SPREAD'"),
    ("zones", "us-central1-a,europe-west4-a", "spans several regions"),
])
def test_bad_zone_settings_fail_before_any_request(ctx, gce, setting, value, error):
    ctx.config.gcp[setting] = value
    with pytest.raises(ProviderError, match=error):
        gcp.create(ctx, FleetSpec(name=FLEET, count=2))
    assert gce.requests == []


def test_a_zone_outside_the_region_fails_before_creating(ctx, gce):
    ctx.config.gcp.zones = [A, "us-central1-z"]
    with pytest.raises(ProviderError, match="us-central1-z, not a zone of us-central1"):
        gcp.create(ctx, FleetSpec(name=FLEET, count=2))
    assert gce.bodies == []


def test_wait_ready_pins_host_keys_in_every_zone_and_list_shows_zone_and_type(ctx, gce, fleet_sshd, capsys,
                                                                              monkeypatch):
    from pathlib import Path

    from rich.console import Console

    from playbooks import fleet
    monkeypatch.setattr(fleet, "console", Console(width=200))   # the whole table, not cut at 80 columns
    port, host_key, _ = fleet_sshd
    gce.host_keys = [host_key]
    ctx.config.gcp.ssh_port = port
    gce.capacity = {A: 1, (B, E2): 0}
    gcp.create(ctx, FleetSpec(name=FLEET, count=2))
    nodes = gcp.wait_ready(ctx, FLEET, 20)
    assert placed(nodes) == ({A: 1, B: 1}, {E2: 1, N2: 1})
    for n in nodes:                                     # the host key was read in the node's own zone
        assert gce.saw(f"/zones/{n.labels[cc.ZONE_KEY]}/instances/{n.name}/getGuestAttributes") >= 1
    assert f"[127.0.0.1]:{port} {host_key}" in (Path(ctx.config.fleet.state_dir) / FLEET / "known_hosts").read_text()
    capsys.readouterr()
    fleet.list_(ctx, name=FLEET, provider="gcp")
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "node" in line)
    assert "zone" in header and "type" in header
    assert any(B in line and N2 in line for line in out.splitlines())
    fleet.list_(ctx, name=FLEET, provider="gcp", json_=True)
    rows = json.loads(capsys.readouterr().out)
    assert {(r["zone"], r["machine_type"]) for r in rows} == {(A, E2), (B, N2)}
    assert gcp.terminate(ctx, FLEET) == 2 and gce.instances == {}


def test_head_instance_goes_to_an_allowed_zone(ctx, gce):
    ctx.config.gcp.zones = [B, C]                       # gcp.zone (A) is not among them
    gcp.create(ctx, FleetSpec(name=FLEET, count=2, head="instance"))
    assert [p for p, _ in gce.bodies if p.endswith("/instances") and "/zones/" in p] == \
        [f"/compute/v1/projects/fake-project/zones/{B}/instances"]
    assert gcp.find_head(ctx, FLEET).zone == B
    assert gcp.terminate(ctx, FLEET) == 3 and gce.instances == {}
