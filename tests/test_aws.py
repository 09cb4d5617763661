"""The aws provider and image bake against a moto server on 127.0.0.1 (fake credentials, AWS_ENDPOINT_URL)."""
from __future__ import annotations

import base64
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.support.cloud import FLEET
from playbooks import image
from playbooks.providers import ProviderError
from playbooks.providers import FleetSpec, aws
from playbooks.providers import cloud as cc


def client():
    return boto3.client("ec2", region_name="us-east-1")


def live(fleet=None):
    filters = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    if fleet:
        filters.append({"Name": "tag:fleet", "Values": [fleet]})
    return [i for r in client().describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]


def test_one_run_instances_for_n_spot_tags_ttl(aws_ctx):
    nodes = aws.create(aws_ctx, FleetSpec(name=FLEET, count=3, ttl_hours=2))
    assert sorted(n.name for n in nodes) == ["demo-0", "demo-1", "demo-2"]
    reservations = client().describe_instances()["Reservations"]
    assert len(reservations) == 1 and len(reservations[0]["Instances"]) == 3
    ec2 = client()
    for inst in reservations[0]["Instances"]:
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags["fleet"] == FLEET and tags["fleetbook-spot"] == "true"
        assert abs(int(tags["fleetbook-deadline"]) - (time.time() + 7200)) < 60
        assert inst["InstanceLifecycle"] == "spot" and inst["KeyName"] == "fleetbook-demo"
        attr = ec2.describe_instance_attribute(InstanceId=inst["InstanceId"],
                                               Attribute="instanceInitiatedShutdownBehavior")
        assert attr["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    user_data = ec2.describe_instance_attribute(InstanceId=nodes[0].id, Attribute="userData")["UserData"]["Value"]
    text = base64.b64decode(user_data).decode()
    assert text.startswith("#cloud-config") and "shutdown -h" in text
    assert f"deadline={tags['fleetbook-deadline']}" in text
    (group,) = ec2.describe_security_groups(GroupNames=["fleetbook-ssh"])["SecurityGroups"]
    ranges = [(p["FromPort"], r["CidrIp"]) for p in group["IpPermissions"] for r in p["IpRanges"]]
    assert ranges == [(22, "198.51.100.7/32")]
    root = ec2.describe_instances(InstanceIds=[nodes[0].id])["Reservations"][0]["Instances"][0]["BlockDeviceMappings"]
    vol = ec2.describe_volumes(VolumeIds=[root[0]["Ebs"]["VolumeId"]])["Volumes"][0]
    assert vol["Size"] == 20


def test_create_is_idempotent_and_grows_the_gap(aws_ctx):
    aws.create(aws_ctx, FleetSpec(name=FLEET, count=2, spot=False))
    assert len(aws.create(aws_ctx, FleetSpec(name=FLEET, count=2))) == 2
    assert len(client().describe_instances()["Reservations"]) == 1
    nodes = aws.create(aws_ctx, FleetSpec(name=FLEET, count=4))
    assert sorted(n.name for n in nodes) == ["demo-0", "demo-1", "demo-2", "demo-3"]
    assert len(client().describe_instances()["Reservations"]) == 2
    assert sum(i.get("InstanceLifecycle") == "spot" for i in live(FLEET)) == 2   # the first two are on-demand


def test_terminate_leaves_nothing_and_list_all_sees_every_fleet(aws_ctx):
    aws.create(aws_ctx, FleetSpec(name=FLEET, count=3))
    aws.create(aws_ctx, FleetSpec(name="other", count=1))
    assert {n.labels["fleet"] for n in aws.list_all(aws_ctx)} == {FLEET, "other"}
    assert aws.terminate(aws_ctx, FLEET) == 3
    assert live(FLEET) == [] and aws.list_nodes(aws_ctx, FLEET) == []
    assert aws.terminate(aws_ctx, FLEET) == 0
    assert len(live("other")) == 1
    with pytest.raises(ClientError):
        client().describe_key_pairs(KeyNames=["fleetbook-demo"])


def test_dry_run_creates_nothing(aws_ctx, capsys):
    assert aws.create(aws_ctx, FleetSpec(name=FLEET, count=3, dry_run=True)) == []
    assert live() == []
    assert client().describe_key_pairs()["KeyPairs"] == []
    assert not client().describe_security_groups(Filters=[{"Name": "group-name", "Values": ["fleetbook-ssh"]}])[
        "SecurityGroups"]
    out = capsys.readouterr().out
    assert "would send RunInstances" in out and '"MaxCount": 3' in out and '"MarketType": "spot"' in out
    aws.create(aws_ctx, FleetSpec(name=FLEET, count=1))
    assert aws.terminate(aws_ctx, FLEET, dry_run=True) == 1 and len(live(FLEET)) == 1


def _patched_run(monkeypatch, start_first: int):
    """run_instances starts ``start_first`` instances, then fails with InsufficientInstanceCapacity."""
    real = aws.ec2

    def fake_ec2(c, region=None):
        cl = real(c, region)
        orig = cl.run_instances

        def run_instances(**kw):
            if start_first:
                orig(**dict(kw, MinCount=start_first, MaxCount=start_first))
            raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity",
                                         "Message": "We currently do not have sufficient capacity"}}, "RunInstances")
        cl.run_instances = run_instances
        return cl
    monkeypatch.setattr(aws, "ec2", fake_ec2)


@pytest.mark.parametrize("started", [0, 1])
def test_capacity_error_leaks_nothing(aws_ctx, monkeypatch, started):
    _patched_run(monkeypatch, started)
    with pytest.raises(ProviderError, match="no capacity or quota .*InsufficientInstanceCapacity.*--no-spot"):
        aws.create(aws_ctx, FleetSpec(name=FLEET, count=3))
    assert live(FLEET) == []


def test_no_credentials_is_one_line(aws_ctx, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)   # boto3 caches the credentials it found
    with pytest.raises(ProviderError, match="no valid credentials"):
        aws.list_nodes(aws_ctx, FLEET)


def test_missing_ssh_cidr_and_bad_name(aws_ctx):
    aws_ctx.config.aws.ssh_cidr = ""
    with pytest.raises(ProviderError, match="aws.ssh_cidr"):
        aws.create(aws_ctx, FleetSpec(name=FLEET, count=1))
    with pytest.raises(ProviderError, match="invalid fleet name"):
        aws.create(aws_ctx, FleetSpec(name="Bad_Name", count=1))
    assert live() == []


CONSOLE = """[   5.1] cloud-init[600]: Cloud-init v. 23.1 running
-----BEGIN SSH HOST KEY KEYS-----
ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEx root@ip-10-0-0-5
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKt6j7a1Gx6Yq6ZfVv3g2a5pJ2Jm0bq2p3mQ3yJ2m0Xs root@ip-10-0-0-5
-----END SSH HOST KEY KEYS-----
"""


def test_host_keys_from_console_output():
    class Stub:
        def get_console_output(self, **kw):
            return {"Output": CONSOLE}
    keys = aws.host_keys(Stub(), "i-1")
    assert keys[1].startswith("ssh-ed25519 AAAAC3") and len(keys) == 2
    assert cc.parse_console_host_keys("no markers here") == []


def test_bake_tags_an_image_skips_the_same_steps_and_is_used(aws_ctx, monkeypatch):
    ran = []
    monkeypatch.setattr(aws, "wait_ready", lambda c, name, timeout, only=None: aws.list_nodes(c, name))
    monkeypatch.setattr(image, "run_steps", lambda c, fleet, node, steps, timeout: ran.append((fleet, steps)))
    aws_ctx.config.image.steps = ["echo one", "echo two"]
    first = image.bake(aws_ctx, provider="aws")
    assert ran and ran[0][1] == ["echo one", "echo two"]
    (img,) = client().describe_images(ImageIds=[first])["Images"]
    digest = {t["Key"]: t["Value"] for t in img["Tags"]}["fleetbook-image-hash"]
    assert digest == image.steps_hash(["echo one", "echo two"], aws_ctx.config.aws.ami, "aws")
    assert live() == []                                    # the template is gone
    assert image.bake(aws_ctx, provider="aws") == first   # same steps: skipped
    assert len(ran) == 1
    nodes = aws.create(aws_ctx, FleetSpec(name=FLEET, count=1))
    assert live(FLEET)[0]["ImageId"] == first and len(nodes) == 1


def test_wait_ready_pins_the_console_host_key(aws_ctx, fleet_sshd, monkeypatch):
    """Moto's public IPs are fictitious: the nodes are pointed at a loopback sshd, the console at its key."""
    import dataclasses
    import getpass
    from pathlib import Path
    port, host_key, _ = fleet_sshd
    aws_ctx.config.aws.user = getpass.getuser()
    real_node = aws._node
    monkeypatch.setattr(aws, "_node", lambda c, inst: dataclasses.replace(real_node(c, inst), host="127.0.0.1",
                                                                          port=port))
    console = CONSOLE.replace(CONSOLE.splitlines()[3].split()[1], host_key.split()[1])
    monkeypatch.setattr(aws, "host_keys", lambda client, iid: cc.parse_console_host_keys(console))
    aws.create(aws_ctx, FleetSpec(name=FLEET, count=2))
    nodes = aws.wait_ready(aws_ctx, FLEET, 15)
    assert len(nodes) == 2
    known = (Path(aws_ctx.config.fleet.state_dir) / FLEET / "known_hosts").read_text()
    assert f"[127.0.0.1]:{port} {host_key}" in known


def test_list_all_scans_every_configured_region(aws_ctx):
    aws.create(aws_ctx, FleetSpec(name=FLEET, count=1))
    west = boto3.client("ec2", region_name="us-west-2")
    west.run_instances(ImageId=west.describe_images(Owners=["amazon"])["Images"][0]["ImageId"], MinCount=1,
                       MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": [
                           {"Key": "fleet", "Value": "orphan"}]}])
    assert {n.labels["fleet"] for n in aws.list_all(aws_ctx)} == {FLEET}
    aws_ctx.config.aws.regions = "us-east-1,us-west-2"
    assert {n.labels["fleet"] for n in aws.list_all(aws_ctx)} == {FLEET, "orphan"}
    assert aws.terminate(aws_ctx, "orphan") == 1


# --- the head instance (aws.head / --head instance) ------------------------------------------------------

def test_head_instance_is_a_separate_on_demand_run_tagged_role_head(aws_ctx):
    aws_ctx.config.aws.head_instance_type = "t3.medium"
    nodes = aws.create(aws_ctx, FleetSpec(name=FLEET, count=2, ttl_hours=2, head="instance"))
    assert sorted(n.name for n in nodes) == ["demo-0", "demo-1"]
    reservations = client().describe_instances()["Reservations"]
    assert sorted(len(r["Instances"]) for r in reservations) == [1, 2]      # one run for the nodes, one for the head
    (head,) = [i for i in live(FLEET) if {"Key": "role", "Value": "head"} in i["Tags"]]
    tags = {t["Key"]: t["Value"] for t in head["Tags"]}
    assert tags["Name"] == "demo-head" and tags["fleet"] == FLEET and tags["fleetbook-spot"] == "false"
    assert "InstanceLifecycle" not in head and head["InstanceType"] == "t3.medium"
    assert head["KeyName"] == "fleetbook-demo"
    ec2 = client()
    text = base64.b64decode(ec2.describe_instance_attribute(InstanceId=head["InstanceId"], Attribute="userData")[
        "UserData"]["Value"]).decode()
    assert "shutdown -h" in text and "Match User fleetsftp" in text and "ChrootDirectory /srv/fleetbook" in text
    vol = ec2.describe_volumes(VolumeIds=[head["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]])["Volumes"][0]
    assert vol["Size"] == 100
    (group,) = ec2.describe_security_groups(GroupNames=["fleetbook-ssh"])["SecurityGroups"]
    assert any(p.get("UserIdGroupPairs", [{}])[0].get("GroupId") == group["GroupId"] for p in group["IpPermissions"]
               if p.get("UserIdGroupPairs"))
    assert {n.name for n in aws.list_nodes(aws_ctx, FLEET)} == {"demo-0", "demo-1"}
    assert "demo-head" in {n.name for n in aws.list_all(aws_ctx)}
    assert aws.find_head(aws_ctx, FLEET).private_ip == head["PrivateIpAddress"]
    aws.create(aws_ctx, FleetSpec(name=FLEET, count=2, head="instance"))      # idempotent: no second head
    assert len(client().describe_instances()["Reservations"]) == 2
    assert aws.terminate(aws_ctx, FLEET) == 3 and live(FLEET) == []


def test_head_instance_dry_run_and_failure_leave_nothing(aws_ctx, capsys, monkeypatch):
    assert aws.create(aws_ctx, FleetSpec(name=FLEET, count=2, dry_run=True, head="instance")) == []
    out = capsys.readouterr().out
    assert live() == [] and "would send RunInstances (head)" in out and '"Value": "head"' in out
    real = aws.ec2

    def fake_ec2(c, region=None):
        cl = real(c, region)
        orig = cl.run_instances

        def run_instances(**kw):
            if "InstanceMarketOptions" not in kw:           # the head's request fails
                raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "no"}},
                                  "RunInstances")
            return orig(**kw)
        cl.run_instances = run_instances
        return cl
    monkeypatch.setattr(aws, "ec2", fake_ec2)
    with pytest.raises(ProviderError, match="could not create the head instance.*terminated the 2 node"):
        aws.create(aws_ctx, FleetSpec(name=FLEET, count=2, head="instance"))
    assert live(FLEET) == []
