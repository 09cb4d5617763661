"""EC2 Fleet: ONE ``create_fleet`` (``Type=instant``) for a fleet that may use several subnets and instance types.

The subnets are ``aws.subnets`` (else ``aws.subnet``; one per availability zone, all in one VPC), the types
``aws.instance_types`` (else ``aws.instance_type``).  With one of each, fleetbook sends the ``run_instances`` it
always did.  With more, it sends one EC2 Fleet request, which is what AWS recommends for spot:

- the launch template ``fleetbook-<fleet>`` (a new version per create) carries what ``run_instances`` would:
  image, key pair, security group, user data (the TTL), ``InstanceInitiatedShutdownBehavior=terminate``, IMDSv2,
  the root volume and its tags;
- ``Overrides``: every subnet x instance type, the pools EC2 may choose from;
- spot (the default): ``SpotOptions.AllocationStrategy=price-capacity-optimized`` (the pools with the most spare
  capacity, then the cheapest of those: fewer interruptions), ``InstanceInterruptionBehavior=terminate``;
  ``--no-spot``: ``OnDemandOptions.AllocationStrategy=lowest-price``;
- ``TargetCapacitySpecification.TotalTargetCapacity``: the gap, in instances;
- ``TagSpecifications`` on the ``instance``: fleet, deadline, spot (``Name`` is added after, per instance).

``--min`` is enforced by fleetbook, not by EC2: ``SpotOptions.MinTargetCapacity`` requires
``SingleAvailabilityZone`` or ``SingleInstanceType``, which would undo the point.  An instant fleet launches what
it can and lists the rest in ``Errors``; below ``--min`` fleetbook terminates what it launched.  ``fleet.down``
deletes the launch template with the key pair.
"""
from __future__ import annotations

import base64
import uuid

from botocore.exceptions import ClientError
from playbooks.providers.types import ProviderError

from playbooks.providers import cloud as cc

TEMPLATE_FIELDS = ("ImageId", "KeyName", "SecurityGroupIds", "InstanceInitiatedShutdownBehavior", "MetadataOptions",
                   "BlockDeviceMappings", "IamInstanceProfile")


def subnets(c) -> list[str]:
    a = c.config.aws
    return list(dict.fromkeys(cc.split_list(a.get("subnets")) or cc.split_list(a.subnet)))


def instance_types(c) -> list[str]:
    return cc.machine_types(c, "aws")


def is_fleet(c) -> bool:
    return len(subnets(c)) > 1 or len(instance_types(c)) > 1


def template_name(fleet: str) -> str:
    return f"fleetbook-{fleet}"


def template_data(params: dict) -> dict:
    """The launch template data for what ``run_params`` would send (EC2 wants the user data base64 here)."""
    data = {k: params[k] for k in TEMPLATE_FIELDS if params.get(k)}
    data["UserData"] = base64.b64encode(params["UserData"].encode()).decode()
    data["TagSpecifications"] = [t for t in params["TagSpecifications"] if t["ResourceType"] == "volume"]
    return data


def request(c, template_id: str, version: int | str, gap: int, spot: bool, tags: list[dict]) -> dict:
    """The CreateFleet request: every subnet x type, the gap as target capacity, the tags on the instances."""
    overrides = [{**({"SubnetId": s} if s else {}), "InstanceType": t}
                 for s in (subnets(c) or [""]) for t in instance_types(c)]
    req = {"Type": "instant", "ClientToken": str(uuid.uuid4()),
           "LaunchTemplateConfigs": [{"LaunchTemplateSpecification": {"LaunchTemplateId": template_id,
                                                                      "Version": str(version)},
                                      "Overrides": overrides}],
           "TargetCapacitySpecification": {"TotalTargetCapacity": gap,
                                           "DefaultTargetCapacityType": "spot" if spot else "on-demand"},
           "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}]}
    if spot:
        req["SpotOptions"] = {"AllocationStrategy": "price-capacity-optimized",
                              "InstanceInterruptionBehavior": "terminate"}
    else:
        req["OnDemandOptions"] = {"AllocationStrategy": "lowest-price"}
    return req


def put_template(client, fleet: str, data: dict) -> tuple[str, int]:
    """Create the fleet's launch template, or a new version of it: (its id, the version to launch)."""
    name = template_name(fleet)
    try:
        lt = client.create_launch_template(LaunchTemplateName=name, LaunchTemplateData=data, TagSpecifications=[
            {"ResourceType": "launch-template", "Tags": [{"Key": cc.FLEET_LABEL, "Value": fleet}]}])["LaunchTemplate"]
        return lt["LaunchTemplateId"], int(lt["LatestVersionNumber"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "InvalidLaunchTemplateName.AlreadyExistsException":
            raise
    version = client.create_launch_template_version(LaunchTemplateName=name, LaunchTemplateData=data)
    return version["LaunchTemplateVersion"]["LaunchTemplateId"], int(version["LaunchTemplateVersion"]["VersionNumber"])


def launch(client, req: dict) -> tuple[list[str], list[dict]]:
    """Send the one CreateFleet: (the ids of the instances it launched, the errors of the pools it could not use)."""
    resp = client.create_fleet(**req)
    ids = [i for inst in resp.get("Instances") or [] for i in inst.get("InstanceIds") or []]
    return ids, list(resp.get("Errors") or [])


def error_text(errors: list[dict]) -> str:
    codes: dict[str, int] = {}
    for e in errors:
        codes[e.get("ErrorCode") or "error"] = codes.get(e.get("ErrorCode") or "error", 0) + 1
    return ", ".join(f"{code} in {n} pool{'s' if n != 1 else ''}" for code, n in sorted(codes.items())) or \
        "fewer instances than asked"


def delete_template(client, fleet: str) -> None:
    try:
        client.delete_launch_template(LaunchTemplateName=template_name(fleet))
    except ClientError:
        pass   # none: already gone


def places(c, client) -> list[str]:
    """What a request tries, for messages: each subnet with its zone, or the region's default subnet."""
    subs = subnets(c)
    if not subs:
        return [f"{c.config.aws.region} (default subnet)"]
    try:
        zone = {s["SubnetId"]: s["AvailabilityZone"] for s in client.describe_subnets(SubnetIds=subs)["Subnets"]}
    except ClientError:
        zone = {}
    return [f"{s} ({zone[s]})" if s in zone else s for s in subs]


def capacity_error(c, client, count: int, spot: bool, what: str, cleaned: str) -> ProviderError:
    return ProviderError(cc.capacity_line("AWS", count, spot, instance_types(c), places(c, client), "subnet", what, cleaned,
                                 "aws.subnets (one per availability zone) or aws.instance_types, try another "
                                 "aws.region"))
