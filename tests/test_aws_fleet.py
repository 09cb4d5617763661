"""Spot capacity across subnets and instance types: one EC2 Fleet (create_fleet, Type=instant) against moto, with
the CreateFleet layer of tests/support/fake_ec2_fleet.py where moto falls short (its docstring says where, exactly)."""
from __future__ import annotations

import base64
import json
import time
from collections import Counter

import boto3
import pytest

from tests.support.cloud import FLEET
from playbooks.providers import ProviderError
from playbooks.providers import FleetSpec, aws
from playbooks.providers import cloud as cc

TYPES = ["c6i.large", "m6i.large"]


def client():
    return boto3.client("ec2", region_name="us-east-1")


def live(fleet=FLEET):
    filters = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
               {"Name": "tag:fleet", "Values": [fleet]}]
    return [i for r in client().describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]


def subnets(ctx):
    return cc.split_list(ctx.config.aws.subnets)


def pools(ctx, room):
    return {(s, t): room for s in subnets(ctx) for t in TYPES}


def test_one_create_fleet_for_20_nodes_over_3_subnets_and_2_types(aws_fleet_ctx, ec2_fleet):
    ctx = aws_fleet_ctx
    ec2_fleet.capacity = pools(ctx, 4)                 # 6 pools of 4: no pool can take them all
    nodes = aws.create(ctx, FleetSpec(name=FLEET, count=20, ttl_hours=2))
    assert sorted(n.name for n in nodes) == sorted(f"demo-{i}" for i in range(20))
    # one create call for the whole fleet (the client sent no RunInstances), one launch template
    assert ec2_fleet.calls["CreateFleet"] == 1 and ec2_fleet.calls["RunInstances"] == 0
    assert ec2_fleet.calls["CreateLaunchTemplate"] == 1
    (req,) = ec2_fleet.fleets
    assert req["Type"] == "instant"
    assert req["SpotOptions"] == {"AllocationStrategy": "price-capacity-optimized",
                                  "InstanceInterruptionBehavior": "terminate"}
    assert req["TargetCapacitySpecification"] == {"TotalTargetCapacity": "20", "DefaultTargetCapacityType": "spot"}
    (config,) = req["LaunchTemplateConfigs"]
    assert [(o["SubnetId"], o["InstanceType"]) for o in config["Overrides"]] == \
        [(s, t) for s in subnets(ctx) for t in TYPES]
    (tagspec,) = req["TagSpecification"]
    tags = {t["Key"]: t["Value"] for t in tagspec["Tag"]}
    assert tagspec["ResourceType"] == "instance" and tags["fleet"] == FLEET and tags["fleetbook-spot"] == "true"
    assert abs(int(tags["fleetbook-deadline"]) - (time.time() + 7200)) < 60
    # where EC2 (the layer) found room: 3 zones, both types, 20 spot instances that carry the TTL
    insts = live()
    assert len(insts) == 20
    assert len(Counter(i["Placement"]["AvailabilityZone"] for i in insts)) == 3
    assert set(Counter(i["InstanceType"] for i in insts)) == set(TYPES)
    assert Counter((n.labels[cc.ZONE_KEY], n.labels[cc.TYPE_KEY]) for n in nodes) == Counter(
        (i["Placement"]["AvailabilityZone"], i["InstanceType"]) for i in insts)
    ec2 = client()
    (group,) = ec2.describe_security_groups(GroupNames=["fleetbook-ssh"])["SecurityGroups"]
    for inst in insts:
        itags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert itags["fleet"] == FLEET and itags["fleetbook-deadline"] == tags["fleetbook-deadline"]
        assert inst["InstanceLifecycle"] == "spot" and inst["KeyName"] == "fleetbook-demo"
        assert [g["GroupId"] for g in inst["SecurityGroups"]] == [group["GroupId"]]
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
    first = insts[0]["InstanceId"]
    attr = ec2.describe_instance_attribute(InstanceId=first, Attribute="instanceInitiatedShutdownBehavior")
    assert attr["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"          # the TTL terminates
    text = base64.b64decode(ec2.describe_instance_attribute(InstanceId=first, Attribute="userData")["UserData"][
        "Value"]).decode()
    assert f"deadline={tags['fleetbook-deadline']}" in text and "shutdown -h" in text
    vol = ec2.describe_volumes(VolumeIds=[insts[0]["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]])["Volumes"][0]
    assert vol["Size"] == 20


def test_refill_after_losing_5_is_one_more_fleet_for_5_and_down_leaves_0(aws_fleet_ctx, ec2_fleet, capsys):
    from playbooks import fleet
    ctx = aws_fleet_ctx
    aws.create(ctx, FleetSpec(name=FLEET, count=20))
    for name in [f"demo-{i}" for i in (0, 3, 7, 11, 19)]:   # preempted
        aws.kill_node(ctx, FLEET, name)
    assert len(aws.list_nodes(ctx, FLEET)) == 15
    nodes = aws.create(ctx, FleetSpec(name=FLEET, count=20))
    assert sorted(n.name for n in nodes) == sorted(f"demo-{i}" for i in range(20))
    assert ec2_fleet.calls["CreateFleet"] == 2 and ec2_fleet.calls["RunInstances"] == 0
    assert ec2_fleet.fleets[1]["TargetCapacitySpecification"]["TotalTargetCapacity"] == "5"
    aws.create(ctx, FleetSpec(name=FLEET, count=20))         # nothing missing: nothing sent
    assert ec2_fleet.calls["CreateFleet"] == 2
    fleet.down(ctx, name=FLEET, provider="aws")
    assert live() == [] and "20 node(s) removed" in capsys.readouterr().out
    assert client().describe_launch_templates()["LaunchTemplates"] == []
    assert client().describe_key_pairs()["KeyPairs"] == []


def test_every_pool_exhausted_is_one_line_and_leaves_nothing(aws_fleet_ctx, ec2_fleet):
    ctx = aws_fleet_ctx
    ec2_fleet.capacity = {s: 0 for s in subnets(ctx)}
    with pytest.raises(ProviderError) as err:
        aws.create(ctx, FleetSpec(name=FLEET, count=6))
    msg = err.value.message
    assert "\n" not in msg and live() == []
    zones = [s["AvailabilityZone"] for s in client().describe_subnets(SubnetIds=subnets(ctx))["Subnets"]]
    assert msg.startswith("AWS has no capacity or quota for 6 x {c6i.large, m6i.large} (spot) in {"
                          + ", ".join(f"{s} ({z})" for s, z in zip(subnets(ctx), zones)) + "} "
                          "(tried 3 subnets x 2 types: InsufficientInstanceCapacity in 6 pools); nothing was left "
                          "running. Widen aws.subnets (one per availability zone) or aws.instance_types")


def test_partial_fleet_below_min_is_terminated_and_above_min_kept(aws_fleet_ctx, ec2_fleet, capsys):
    ctx = aws_fleet_ctx
    ec2_fleet.capacity = {subnets(ctx)[0]: 3, subnets(ctx)[1]: 0, subnets(ctx)[2]: 0}
    with pytest.raises(ProviderError, match=r"no capacity or quota for 5 x .*terminated the 3 instance\(s\) it had started"):
        aws.create(ctx, FleetSpec(name=FLEET, count=5))
    assert live() == []
    ec2_fleet.capacity = {subnets(ctx)[0]: 3, subnets(ctx)[1]: 0, subnets(ctx)[2]: 0}
    nodes = aws.create(ctx, FleetSpec(name=FLEET, count=5, min_count=3))
    assert len(nodes) == 3 and len(live()) == 3
    assert "launched 3 of 5 (InsufficientInstanceCapacity in 6 pools)" in capsys.readouterr().out


def test_dry_run_prints_the_template_and_the_fleet_and_sends_nothing(aws_fleet_ctx, ec2_fleet, capsys):
    ctx = aws_fleet_ctx
    assert aws.create(ctx, FleetSpec(name=FLEET, count=20, dry_run=True)) == []
    sent = {a for a in ec2_fleet.calls if not a.startswith("Describe")}
    assert sent == set() and live() == []
    out = capsys.readouterr().out
    assert "would send CreateLaunchTemplate fleetbook-demo" in out and "would send RunInstances" not in out
    req = json.loads(out[out.index("would send CreateFleet\n") + len("would send CreateFleet\n"):])
    assert req["TargetCapacitySpecification"]["TotalTargetCapacity"] == 20 and len(
        req["LaunchTemplateConfigs"][0]["Overrides"]) == 6
    assert req["SpotOptions"]["AllocationStrategy"] == "price-capacity-optimized"


def test_on_demand_fleet_and_list_shows_zone_and_type(aws_fleet_ctx, ec2_fleet, capsys):
    from playbooks import fleet
    ctx = aws_fleet_ctx
    ctx.config.aws.subnets = subnets(ctx)[0]            # one subnet, two types: still one EC2 Fleet
    nodes = aws.create(ctx, FleetSpec(name=FLEET, count=2, spot=False))
    (req,) = ec2_fleet.fleets
    assert req["TargetCapacitySpecification"]["DefaultTargetCapacityType"] == "on-demand"
    assert req["OnDemandOptions"] == {"AllocationStrategy": "lowest-price"} and "SpotOptions" not in req
    assert all("InstanceLifecycle" not in i for i in live()) and len(nodes) == 2
    fleet.list_(ctx, name=FLEET, provider="aws", json_=True)
    rows = json.loads(capsys.readouterr().out)
    assert {r["zone"] for r in rows} == {live()[0]["Placement"]["AvailabilityZone"]}
    assert {r["machine_type"] for r in rows} <= set(TYPES)


def test_subnets_of_two_vpcs_fail_before_anything_is_created(aws_fleet_ctx, ec2_fleet):
    ctx = aws_fleet_ctx
    ec2 = client()
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    other = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
    ctx.config.aws.subnets = [subnets(ctx)[0], other]
    with pytest.raises(ProviderError, match="aws.subnets are in 2 VPCs"):
        aws.create(ctx, FleetSpec(name=FLEET, count=2))
    assert ec2_fleet.calls["CreateFleet"] == 0 and live() == []
