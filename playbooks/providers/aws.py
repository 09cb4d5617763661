"""The ``aws`` provider: EC2 instances (spot by default) started by one request for the whole gap: ``run_instances``
for one subnet and one instance type, one EC2 Fleet (``create_fleet``, see aws_fleet.py) when ``aws.subnets`` /
``aws.instance_types`` allow several, so EC2 picks the pools that have capacity.

Every instance carries the tags ``fleet=<name>``, ``fleetbook-deadline=<epoch>``, ``fleetbook-spot`` and
``Name=<fleet>-<i>``; it boots with the fleet's key pair (``fleetbook-<fleet>``, imported from the fleet's own
public key) in the security group ``aws.security_group`` that admits port 22 from ``aws.ssh_cidr`` only.  The
TTL is enforced on the instance: user data schedules a power-off at the deadline at every boot, and
``InstanceInitiatedShutdownBehavior=terminate`` turns that power-off into a termination.  Host keys are pinned
from the console output (cloud-init prints them between ``-----BEGIN SSH HOST KEY KEYS-----`` markers), else
on first use into the fleet's own known_hosts.  boto3 honours ``AWS_ENDPOINT_URL`` (moto in the tests).
"""
from __future__ import annotations

import base64
import json
import time
import uuid

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from playbooks.providers import PENDING, RUNNING, STOPPED, TERMINATED, FleetSpec, HeadInstance, Node
from playbooks.providers import aws_fleet as fleets
from playbooks.providers import cloud as cc
from playbooks.providers.aws_setup import (CAPACITY_CODES, _code, _fail, _tags, _waiter, block_devices,  # noqa: F401
                                           ensure_head_ingress, ensure_key_pair, ensure_security_group, key_name,
                                           source_image)
from playbooks.providers.cloud.hooks import fleet_estimate, shared_hooks
from playbooks.providers.types import ProviderError
from playbooks.settings.defaults import shared_mountpoint
from playbooks.settings import setting

STATES = {"pending": PENDING, "running": RUNNING, "stopping": STOPPED, "stopped": STOPPED,
          "shutting-down": TERMINATED, "terminated": TERMINATED}
LIVE = ["pending", "running", "stopping", "stopped"]


def ec2(c, region: str | None = None):
    return boto3.client("ec2", region_name=region or setting(c, "aws.region"))


def regions(c) -> list[str]:
    a = c.config.aws
    return list(dict.fromkeys([str(a.region), *cc.split_list(a.regions)]))


# --- instances -> nodes -----------------------------------------------------------------------------------

def _node(c, inst: dict) -> Node:
    tags = _tags(inst)
    return Node(name=tags.get("Name") or inst["InstanceId"], host=inst.get("PublicIpAddress")
                or inst.get("PrivateIpAddress", ""), port=setting(c, "aws.ssh_port"), user=setting(c, "aws.user"),
                state=STATES.get(inst["State"]["Name"], PENDING), id=inst["InstanceId"],
                labels=cc.node_facts(tags, inst.get("Placement", {}).get("AvailabilityZone", ""),
                                     inst.get("InstanceType", "")),
                started_at=inst["LaunchTime"].timestamp() if inst.get("LaunchTime") else None,
                mountpoint=shared_mountpoint(c))


def _describe(client, filters: list[dict]) -> list[dict]:
    out = []
    for page in client.get_paginator("describe_instances").paginate(Filters=filters):
        for res in page["Reservations"]:
            out += res["Instances"]
    return out


def _raw(c, name: str | None, states=None) -> list[tuple[str, dict]]:
    tag = {"Name": f"tag:{cc.FLEET_LABEL}", "Values": [name]} if name else {"Name": "tag-key",
                                                                           "Values": [cc.FLEET_LABEL]}
    filters = [tag, {"Name": "instance-state-name", "Values": states or LIVE}]
    out = []
    for region in regions(c):
        try:
            out += [(region, i) for i in _describe(ec2(c, region), filters)]
        except (ClientError, BotoCoreError) as exc:
            raise _fail(exc, f"listing instances in {region}") from None
    return out


def list_nodes(c, name: str) -> list[Node]:
    """The fleet's workers (a head instance, tag ``role=head``, is not a node)."""
    return [_node(c, i) for _, i in _raw(c, name) if not cc.is_head(_tags(i))]


def find_head(c, name: str) -> HeadInstance | None:
    """The fleet's head instance (as a Node, its private address, its region), or None when it has none."""
    for region, inst in _raw(c, name, ["pending", "running"]):
        if cc.is_head(_tags(inst)):
            return HeadInstance(node=_node(c, inst), private_ip=inst.get("PrivateIpAddress", ""), zone=region)
    return None


def list_all(c) -> list[Node]:
    """Every non-terminated instance with a ``fleet`` tag in ``aws.region`` and ``aws.regions``."""
    return [_node(c, i) for _, i in _raw(c, None)]


# --- create -----------------------------------------------------------------------------------------------

def estimate(c, spec: FleetSpec) -> str:
    return fleet_estimate(c, "aws", spec)


def head_params(c, name: str, ttl_hours: float, image: str, key: str, group: str, devices: list[dict]) -> dict:
    """One on-demand instance (no InstanceMarketOptions), tags fleet + role=head, Name <fleet>-head, its own
    type and disk, the same TTL and key (its power-off at the deadline STOPS it: the shared root on its volume
    stays, see keep.py), user data that makes the SFTP-only shared root."""
    a = c.config.aws
    params = run_params(c, name, 1, 1, False, ttl_hours, image, key, group)
    params.pop("IamInstanceProfile", None)   # the head holds no cloud credentials, whatever the nodes get
    labels = cc.head_labels(name, ttl_hours)
    tags = [{"Key": k, "Value": v} for k, v in {**labels, "Name": cc.head_name(name)}.items()]
    params.update(InstanceType=str(a.head_instance_type), InstanceInitiatedShutdownBehavior="stop", TagSpecifications=[
        {"ResourceType": "instance", "Tags": tags}, {"ResourceType": "volume", "Tags": tags}],
        UserData=cc.aws_head_user_data(c, name, int(labels[cc.DEADLINE_LABEL])),
        BlockDeviceMappings=[{**d, "Ebs": {**d["Ebs"], "VolumeSize": setting(c, "aws.head_disk_gb")}} for d in devices])
    return params


def run_params(c, name: str, gap: int, min_count: int, spot: bool, ttl_hours: float, image: str,
               key: str, group: str) -> dict:
    a = c.config.aws
    labels = cc.fleet_labels(name, ttl_hours, spot)
    tags = [{"Key": k, "Value": v} for k, v in labels.items()]
    params = {
        "ImageId": image, "InstanceType": fleets.instance_types(c)[0], "MinCount": min_count, "MaxCount": gap,
        "KeyName": key, "SecurityGroupIds": [group],
        "UserData": cc.aws_user_data(int(labels[cc.DEADLINE_LABEL]), shared_mountpoint(c)),
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {"HttpTokens": "required"},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                              {"ResourceType": "volume", "Tags": tags}],
        "ClientToken": str(uuid.uuid4()),
    }
    if spot:
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    if fleets.subnets(c):
        params["SubnetId"] = fleets.subnets(c)[0]
    if str(a.get("node_instance_profile", "")):   # issue 14: the nodes' own credentials for a bucket run
        params["IamInstanceProfile"] = {"Name": str(a.node_instance_profile)}
    return params


def _name_instances(client, name: str, existing: list[Node], new_ids: list[str]) -> None:
    taken = {n.name for n in existing}
    i = 0
    for iid in new_ids:
        while f"{name}-{i}" in taken:
            i += 1
        taken.add(f"{name}-{i}")
        client.create_tags(Resources=[iid], Tags=[{"Key": "Name", "Value": f"{name}-{i}"}])


def create(c, spec: FleetSpec, image: str | None = None) -> list[Node]:
    """Start the gap up to ``spec.count`` with one run_instances (MinCount = what --min still needs), or one EC2
    Fleet over several subnets and instance types (--min checked on what it launched)."""
    name, min_count = cc.check_spec(spec)
    with_head = image is None and cc.head_mode(c, "aws", spec.head) == "instance"   # a bake makes no head
    client = ec2(c)
    existing = [n for n in list_nodes(c, name) if n.state in (RUNNING, PENDING)]
    gap = spec.count - len(existing)
    # a head its TTL stopped is started again (issue 14), never replaced by a second one
    restarted = start_head(c, name, spec.ttl_hours, spec.dry_run)
    need_head = with_head and restarted is None and find_head(c, name) is None
    if gap <= 0 and not need_head:
        return existing
    try:
        key = ensure_key_pair(c, client, name, spec.dry_run)
        group = ensure_security_group(c, client, spec.dry_run)
        image = image or source_image(c, client)
        params = run_params(c, name, max(gap, 1), max(1, min(gap, min_count - len(existing))), spec.spot,
                            spec.ttl_hours, image, key, group)
        params["BlockDeviceMappings"] = block_devices(c, client, image)
        hparams = head_params(c, name, spec.ttl_hours, image, key, group, params["BlockDeviceMappings"])
        if need_head:
            ensure_head_ingress(c, client, group, spec.dry_run)
    except (ClientError, BotoCoreError) as exc:
        raise _fail(exc, "preparing the fleet") from None
    use_fleet = gap > 0 and fleets.is_fleet(c)
    if spec.dry_run:
        tags = params["TagSpecifications"][0]["Tags"]
        for what, p, show in (
                (f"CreateLaunchTemplate {fleets.template_name(name)} (or a new version of it)",
                 fleets.template_data(params), use_fleet),
                ("CreateFleet", fleets.request(c, "(the template above)", "(its new version)", params["MaxCount"],
                                               spec.spot, tags), use_fleet),
                ("RunInstances", params, gap > 0 and not use_fleet), ("RunInstances (head)", hparams, need_head)):
            if show:
                print(f"[dry run] would send {what}")
                print(json.dumps(p, indent=1, sort_keys=True))
        return existing
    before = {n.id for n in existing}
    ids = []
    if use_fleet:
        ids = _launch_fleet(c, client, spec, params, before, min_count)
        _name_instances(client, name, existing, ids)
    elif gap > 0:
        try:
            reservation = client.run_instances(**params)
        except (ClientError, BotoCoreError) as exc:
            return _after_failure(c, client, spec, before, min_count, exc)
        ids = [i["InstanceId"] for i in reservation["Instances"]]
        _name_instances(client, name, existing, ids)
    if need_head:
        try:
            ids.append(client.run_instances(**hparams)["Instances"][0]["InstanceId"])
            print(f"head instance {cc.head_name(name)}: {c.config.aws.head_instance_type}, on-demand, "
                  f"{c.config.aws.head_disk_gb} GB; the nodes mount it over the VPC")
        except (ClientError, BotoCoreError) as exc:
            if ids:
                client.terminate_instances(InstanceIds=ids)
            raise ProviderError(f"AWS could not create the head instance of fleet {name} ({_code(exc)}); terminated the "
                                f"{len(ids)} node(s) this call had started. Try another aws.head_instance_type or "
                                "aws.region, or --head tunnel") from None
    if spec.wait and ids:
        _waiter(client, "instance_running", setting(c, "aws.waiter_timeout"), InstanceIds=ids)
    nodes = [n for n in list_nodes(c, name) if n.state in (RUNNING, PENDING)]
    if len(nodes) < spec.count:
        print(f"warning: fleet {name}: {len(nodes)} of {spec.count} instances started (at least --min {min_count})")
    return nodes


def _launch_fleet(c, client, spec: FleetSpec, params: dict, before: set[str], min_count: int) -> list[str]:
    """One CreateFleet for the gap; below what --min still needs, terminate what it launched and say why."""
    try:
        template, version = fleets.put_template(client, spec.name, fleets.template_data(params))
        ids, errors = fleets.launch(client, fleets.request(c, template, version, params["MaxCount"], spec.spot,
                                                           params["TagSpecifications"][0]["Tags"]))
    except (ClientError, BotoCoreError) as exc:
        return _after_failure(c, client, spec, before, min_count, exc)
    if len(ids) < params["MinCount"]:
        if ids:
            client.terminate_instances(InstanceIds=ids)
        cleaned = f"terminated the {len(ids)} instance(s) it had started" if ids else "nothing was left running"
        raise fleets.capacity_error(c, client, spec.count, spec.spot, fleets.error_text(errors), cleaned)
    if errors:
        print(f"warning: fleet {spec.name}: the EC2 Fleet launched {len(ids)} of {params['MaxCount']} "
              f"({fleets.error_text(errors)}); continuing with them (>= --min {min_count})")
    return ids


def _after_failure(c, client, spec: FleetSpec, before: set[str], min_count: int, exc: Exception) -> list[Node]:
    """run_instances is all-or-nothing up to MinCount; still, terminate anything this call left behind."""
    nodes = [n for n in list_nodes(c, spec.name) if n.state in (RUNNING, PENDING)]
    new = [n.id for n in nodes if n.id not in before]
    if new and len(nodes) < min_count:
        client.terminate_instances(InstanceIds=new)
    cleaned = f"terminated the {len(new)} instance(s) it had started" if new else "nothing was left running"
    code = _code(exc)
    if code in CAPACITY_CODES:
        raise fleets.capacity_error(c, client, spec.count, spec.spot, code, cleaned) from None
    raise _fail(exc, f"creating fleet {spec.name} ({cleaned})") from None


# --- readiness and host keys ------------------------------------------------------------------------------

def host_keys(client, instance_id: str) -> list[str]:
    """Host keys cloud-init printed to the console (trusted: read through the authenticated API)."""
    try:
        out = client.get_console_output(InstanceId=instance_id, Latest=True).get("Output") or ""
    except ClientError:
        return []
    return cc.parse_console_host_keys(out)


def wait_ready(c, name: str, timeout: float, only: set[str] | None = None) -> list[Node]:
    clients = {r: ec2(c, r) for r in regions(c)}
    where: dict[str, str] = {}

    def lister(c, name, heads=False):
        raw = _raw(c, name, ["pending", "running"])
        where.update({i["InstanceId"]: r for r, i in raw})
        return [n for n in (_node(c, i) for _, i in raw if cc.is_head(_tags(i)) == heads)
                if heads or only is None or n.name in only]

    def keys(node):
        return host_keys(clients[where[node.id]], node.id)

    nodes = cc.wait_ready(c, name, timeout, lister, keys)
    if find_head(c, name) is not None:   # the head instance: its host key pinned, it answers SSH
        cc.wait_ready(c, name, timeout, lambda c, name: lister(c, name, heads=True), keys)
    return nodes


def start_head(c, name: str, ttl_hours: float, dry_run: bool = False) -> Node | None:
    """Start the fleet's head instance when it is stopped (its TTL powers it off, keeping the shared root on its
    volume), with a new deadline ``ttl_hours`` from now: its boot script schedules the power-off from the user
    data, which EC2 lets us change only while it is stopped, so it is changed first (and the deadline tag).
    Waits until it answers SSH with its host key pinned; returns it, or None when there is no stopped head."""
    stopped = [(r, i) for r, i in _raw(c, name, ["stopping", "stopped"]) if cc.is_head(_tags(i))]
    if not stopped:
        return None
    region, inst = stopped[0]
    iid, client = inst["InstanceId"], ec2(c, region)
    labels = cc.head_labels(name, ttl_hours)
    if dry_run:
        print(f"[dry run] would send ModifyInstanceAttribute {iid} UserData (TTL deadline "
              f"{labels[cc.DEADLINE_LABEL]}), then StartInstances {iid} ({region})")
        return _node(c, inst)
    timeout = setting(c, "aws.waiter_timeout")
    try:
        _waiter(client, "instance_stopped", timeout, InstanceIds=[iid])
        data = cc.aws_head_user_data(c, name, int(labels[cc.DEADLINE_LABEL]))
        # ModifyInstanceAttribute wants the user data base64-encoded by the caller (unlike RunInstances, whose
        # UserData botocore encodes); moto checks the same
        client.modify_instance_attribute(InstanceId=iid, UserData={"Value": base64.b64encode(data.encode())})
        client.create_tags(Resources=[iid], Tags=[{"Key": cc.DEADLINE_LABEL, "Value": labels[cc.DEADLINE_LABEL]}])
        client.start_instances(InstanceIds=[iid])
        _waiter(client, "instance_running", timeout, InstanceIds=[iid])
    except (ClientError, BotoCoreError) as exc:
        raise _fail(exc, f"starting the head instance {iid}") from None
    print(f"head instance {cc.head_name(name)}: started again (it was stopped, with the shared root on its volume); "
          f"its TTL now ends in {ttl_hours:g} h")
    keys = lambda node: host_keys(client, node.id)   # noqa: E731
    cc.wait_ready(c, name, setting(c, "fleet.ready_timeout"),
                  lambda c, name: [_node(c, i) for _, i in _raw(c, name, ["pending", "running"])
                                   if cc.is_head(_tags(i))], keys)
    found = find_head(c, name)
    return found.node if found else None


# --- terminate --------------------------------------------------------------------------------------------

def head_node(c, name: str):
    """The fleet's head instance as a Node in any live state (stopped too), or None: what ``keep.check`` asks."""
    return next((_node(c, i) for _, i in _raw(c, name) if cc.is_head(_tags(i))), None)


def terminate(c, name: str, dry_run: bool = False, keep_head: bool = False) -> int:
    """Terminate every instance of the fleet; with ``keep_head`` the head instance (and the shared root) stays."""
    def listed():
        return [(r, i) for r, i in _raw(c, name, LIVE + ["shutting-down"])
                if not (keep_head and cc.is_head(_tags(i)))]

    raw = listed()
    if dry_run:
        for region, inst in raw:
            print(f"[dry run] would send TerminateInstances {inst['InstanceId']} ({region})")
        return len(raw)
    timeout = setting(c, "aws.waiter_timeout")
    removed: set[str] = set()
    deadline = time.monotonic() + timeout
    cc.forget_hosts(c, name, [_node(c, inst) for _, inst in raw])
    cc.stop_head(c, name)
    while raw:
        by_region: dict[str, list[str]] = {}
        for region, inst in raw:
            by_region.setdefault(region, []).append(inst["InstanceId"])
        for region, ids in by_region.items():
            client = ec2(c, region)
            try:
                client.terminate_instances(InstanceIds=ids)
            except ClientError as exc:
                if _code(exc) != "InvalidInstanceID.NotFound":
                    raise _fail(exc, "terminating instances") from None
            _waiter(client, "instance_terminated", max(1.0, deadline - time.monotonic()), InstanceIds=ids)
            removed |= set(ids)
        raw = listed()
        if raw and time.monotonic() > deadline:
            raise ProviderError(f"fleet {name}: {len(raw)} instance(s) still alive after {timeout:g} s; run fleet.down again")
    for region in regions(c) if not keep_head else []:   # the kept head still needs the key pair
        try:
            ec2(c, region).delete_key_pair(KeyName=key_name(name))
        except ClientError:
            pass
        fleets.delete_template(ec2(c, region), name)
    return len(removed)


def kill_node(c, name: str, node: str) -> None:
    for region, inst in _raw(c, name):
        if node in (inst["InstanceId"], _tags(inst).get("Name")):
            ec2(c, region).terminate_instances(InstanceIds=[inst["InstanceId"]])


# --- image bake (driven by playbooks/image.py) ------------------------------------------------------------

def base_image(c) -> str:
    return source_image(c, ec2(c), base=True)


def find_image(c, digest: str) -> str | None:
    """The id of an available AMI of this account tagged ``fleetbook-image-hash=<digest>``, or None."""
    try:
        images = ec2(c).describe_images(Owners=["self"], Filters=[
            {"Name": f"tag:{cc.IMAGE_HASH_LABEL}", "Values": [digest]}])["Images"]
    except (ClientError, BotoCoreError) as exc:
        raise _fail(exc, "listing images") from None
    images = [i for i in images if i.get("State") in ("available", "pending")]
    return images[0]["ImageId"] if images else None


def capture_image(c, node: Node, digest: str, image_name: str) -> str:
    """Stop the template instance and create AMI ``image_name`` tagged with the steps' hash; wait until usable."""
    client = ec2(c)
    timeout = setting(c, "aws.waiter_timeout")
    try:
        client.stop_instances(InstanceIds=[node.id])
        _waiter(client, "instance_stopped", timeout, InstanceIds=[node.id])
        image_id = client.create_image(
            InstanceId=node.id, Name=image_name, Description=f"fleetbook image.bake, setup steps {digest}",
            TagSpecifications=[{"ResourceType": "image", "Tags": [
                {"Key": cc.IMAGE_HASH_LABEL, "Value": digest}, {"Key": "fleetbook-family",
                                                                "Value": setting(c, "image.family")}]}])["ImageId"]
        _waiter(client, "image_available", timeout, ImageIds=[image_id])
    except (ClientError, BotoCoreError) as exc:
        raise _fail(exc, f"creating image {image_name}") from None
    return image_id


cost_so_far, head, stop_head = shared_hooks("aws")   # the hooks gcp and aws share
