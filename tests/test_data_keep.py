"""What happens to a head instance that ``fleet.down`` kept (issue 14): its TTL stops it, ``data.pull`` and
``fleet.create`` start it again (never a second head), and ``data.drop`` deletes it with its disk, only with
``--yes``, after naming what goes.  On the GCE fake and on moto, with the real loopback sshds of
``test_data_head`` (root, sshfs, FUSE).
"""
from __future__ import annotations

import base64

import pytest
from invoke.exceptions import Exit

from playbooks import data, fleet
from playbooks.providers import cloud as cc
from playbooks.runs import head_instance as hi
from playbooks.runs import state as runstate
from playbooks.settings.errors import FleetbookError
from test_data_head import _landed, on_aws_head, on_head, push_and_run
from test_gcp_head_instance import head_instance_sshd, pytestmark, sftp_user  # noqa: F401
from tests.support.cloud import FLEET


def gce_stop(c, gce, name: str = "demo-head") -> None:
    """What the head's TTL does on GCP (instanceTerminationAction=STOP): the VM stops, its disk stays."""
    from playbooks.providers.gcp_api import Api
    api = Api(c)
    (zone,) = [z for z, n in gce.instances if n == name]
    api.wait(api.instances.stop(project=api.project, zone=zone, instance=name), "stop")
    assert gce.instances[(zone, name)]["status"] == "TERMINATED"
    hi._REMOTE_HEADS.clear()


def test_gcp_kept_head_is_restarted_by_pull_and_create_and_dropped_only_with_yes(
        gcp_ctx, gce, fleet_sshd, head_instance_sshd, tmp_path, monkeypatch, capsys):
    c = gcp_ctx
    shared = on_head(c, gce, fleet_sshd, head_instance_sshd, tmp_path, monkeypatch)
    push_and_run(c, "gcp", tmp_path, 4)
    outputs = _landed(shared / "out")
    with pytest.raises(Exit, match="still has 1 node.*fleet.down.*first"):
        data.drop(c, name=FLEET, yes=True)                          # the nodes go with fleet.down, not here
    with pytest.raises(Exit, match="kept the head instance demo-head.*data.drop --provider gcp --name demo --yes"):
        fleet.down(c, name=FLEET, provider="gcp")
    # data.drop names what goes, and deletes nothing without --yes (or with --dry-run)
    with pytest.raises(Exit, match=r"deletes the head instance demo-head \(running\) and its disk \(100 GB disk: "
                                   r"about \$10/month.*never pulled.*out/.*confirm with --yes"):
        data.drop(c, name=FLEET)
    capsys.readouterr()
    data.drop(c, name=FLEET, dry_run=True, yes=True)
    said = " ".join(capsys.readouterr().out.split())
    assert "[dry run] data.drop would delete the head instance demo-head" in said and "DELETE" in said
    assert [n for _, n in gce.instances] == ["demo-head"] and _landed(shared / "out") == outputs
    # its TTL stops it: the shared root is on its disk, never taken for this machine's folder
    gce_stop(c, gce)
    with pytest.raises(FleetbookError, match="demo-head of fleet demo is stopped.*starts it again"):
        runstate.load_run(c, provider="gcp", fleet=FLEET)
    # data.pull starts it again and pulls the outputs byte-identical
    data.pull(c, from_="out", to=str(tmp_path / "results"))
    assert "starting it to reach the shared root" in " ".join(capsys.readouterr().out.split())
    assert gce.saw("/instances/demo-head/start", "POST") == 1
    assert {r: (tmp_path / "results" / r).read_bytes() for r in _landed(tmp_path / "results")} == {
        r: (shared / "out" / r).read_bytes() for r in outputs}
    # stopped again, fleet.create --head instance starts it again: one head, never a second one
    gce_stop(c, gce)
    fleet.create(c, n=1, name=FLEET, provider="gcp", head="instance")
    assert gce.saw("/instances/demo-head/start", "POST") == 2
    assert sorted(n for _, n in gce.instances) == ["demo-0001", "demo-head"]
    assert all(i["status"] == "RUNNING" for i in gce.instances.values())
    fleet.down(c, name=FLEET, provider="gcp")                         # pulled since the run ended: all of it goes
    assert gce.instances == {}
    with pytest.raises(Exit, match="no head instance"):
        data.drop(c, name=FLEET, yes=True)
    hi._REMOTE_HEADS.clear()


def test_aws_kept_head_is_restarted_with_a_new_ttl_and_dropped_with_its_volume(
        aws_ctx, gcp_ctx, fleet_sshd, head_instance_sshd, tmp_path, monkeypatch, capsys):
    import boto3
    c = aws_ctx
    shared = on_aws_head(c, fleet_sshd, head_instance_sshd, tmp_path, monkeypatch)
    push_and_run(c, "aws", tmp_path, 3)
    outputs = _landed(shared / "out")
    ec2 = boto3.client("ec2", region_name="us-east-1")

    def instances(states=("pending", "running", "stopping", "stopped")):
        return {cc.head_name(FLEET) if i.get("Tags") and {"Key": "role", "Value": "head"} in i["Tags"]
                else i["InstanceId"]: i for r in ec2.describe_instances(Filters=[
                    {"Name": "instance-state-name", "Values": list(states)}])["Reservations"] for i in r["Instances"]}

    def deadline(iid: str) -> int:
        data_ = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
        text = base64.b64decode(data_).decode()
        return int(text.split("deadline=")[1].split("\\n")[0].split()[0].strip('"'))

    with pytest.raises(Exit, match="kept the head instance demo-head"):
        fleet.down(c, name=FLEET, provider="aws")
    head = instances()["demo-head"]
    iid = head["InstanceId"]
    volumes = [m["Ebs"]["VolumeId"] for m in head["BlockDeviceMappings"]]
    first = deadline(iid)
    ec2.stop_instances(InstanceIds=[iid])                               # the TTL's power-off (behaviour: stop)
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid])
    hi._REMOTE_HEADS.clear()
    capsys.readouterr()
    data.drop(c, name=FLEET, dry_run=True)
    assert "would delete the head instance demo-head (stopped)" in " ".join(capsys.readouterr().out.split())
    # fleet.create starts the same head again, with a new TTL in its user data (changed while it was stopped)
    fleet.create(c, n=1, name=FLEET, provider="aws", head="instance", ttl=5)
    now = instances(("pending", "running"))
    assert [k for k in now if k == "demo-head"] == ["demo-head"] and now["demo-head"]["InstanceId"] == iid
    assert len(now) == 2                                                # the head (the same one) and one node
    assert deadline(iid) > first + 3600                                 # 5 h from now, not the old deadline
    with pytest.raises(Exit, match="still has 1 node"):
        data.drop(c, name=FLEET, yes=True)
    with pytest.raises(Exit, match="kept the head instance"):
        fleet.down(c, name=FLEET, provider="aws")                       # still not pulled: kept again
    ec2.stop_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid])
    hi._REMOTE_HEADS.clear()
    data.pull(c, from_="out", to=str(tmp_path / "results"))            # starts it, then pulls
    assert set(_landed(tmp_path / "results")) == set(outputs)
    with pytest.raises(Exit, match="every run's outputs were pulled.*confirm with --yes"):
        data.drop(c, name=FLEET)
    assert "demo-head" in instances()
    data.drop(c, name=FLEET, yes=True)
    assert instances() == {}
    left = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": volumes}])["Volumes"]
    assert all(v["State"] in ("deleting", "deleted") for v in left)     # DeleteOnTermination: its volume went
    hi._REMOTE_HEADS.clear()


def test_aws_nodes_get_an_instance_profile_only_when_set_and_the_head_never(aws_ctx):
    """A bucket run's nodes use their own credentials: on AWS the instance profile aws.node_instance_profile."""
    from playbooks.providers import aws
    from playbooks.providers import aws_fleet
    c = aws_ctx
    assert "IamInstanceProfile" not in aws.run_params(c, FLEET, 2, 2, True, 2.0, "ami-1", "k", "sg-1")
    c.config.aws.node_instance_profile = "fleetbook-nodes-s3"
    params = aws.run_params(c, FLEET, 2, 2, True, 2.0, "ami-1", "k", "sg-1")
    assert params["IamInstanceProfile"] == {"Name": "fleetbook-nodes-s3"}
    assert aws_fleet.template_data(params)["IamInstanceProfile"] == {"Name": "fleetbook-nodes-s3"}   # EC2 Fleet too
    assert "IamInstanceProfile" not in aws.head_params(c, FLEET, 2.0, "ami-1", "k", "sg-1", [])


def test_a_bucket_run_leaves_nothing_to_pull_from_the_head(tmp_path):
    """fleet.down keeps a head for the runs whose outputs are on its disk; a bucket run's are in the bucket."""
    import json as json_
    from playbooks.runs import keep

    class Head:   # the shared root of a head instance, as keep.unpulled reads it (listdir + files)
        def __init__(self, runs):
            self.runs = runs

        def sftp(self):
            head = self

            class S:
                def listdir(self, path):
                    return [*head.runs, "LATEST"]
            return S()

        def read_text(self, rel):
            return json_.dumps(self.runs[rel.split("/")[2]]) if rel.endswith("/run.json") else None

    runs = {"r-disk": {"run_id": "r-disk", "dst": "out", "started_at": 1.0, "nodes": []},
            "r-bucket": {"run_id": "r-bucket", "src": "s3://b/src", "dst": "s3://b/out", "started_at": 1.0,
                         "nodes": []}}
    assert [u["run_id"] for u in keep.unpulled(Head(runs))] == ["r-disk"]
