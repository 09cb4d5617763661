"""What an ``aws`` fleet's instances are made from: the fleet's key pair, the security group (SSH from the operator,
SFTP from the nodes to the head instance), the VPC, the image (baked or the base AMI) and its block devices; and
boto's errors as one-line ProviderErrors.
"""
from __future__ import annotations

import hashlib
import math

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, WaiterError

from playbooks.providers import aws_fleet as fleets
from playbooks.providers import cloud as cc
from playbooks.providers.types import ProviderError
from playbooks.settings import setting

CAPACITY_CODES = ("InsufficientInstanceCapacity", "InsufficientCapacity", "InstanceLimitExceeded",
                  "MaxSpotInstanceCountExceeded", "VcpuLimitExceeded", "SpotMaxPriceTooLow",
                  "InsufficientFreeAddressesInSubnet", "Unsupported")


def _code(exc: Exception) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__


def _fail(exc: Exception, what: str) -> ProviderError:
    if isinstance(exc, NoCredentialsError) or _code(exc) in ("AuthFailure", "UnauthorizedOperation",
                                                              "InvalidClientTokenId"):
        return ProviderError(f"AWS refused {what}: no valid credentials ({_code(exc)}); run `aws configure` or set "
                             "AWS_PROFILE / AWS_ACCESS_KEY_ID")
    msg = exc.response.get("Error", {}).get("Message", "") if isinstance(exc, ClientError) else str(exc)
    return ProviderError(f"AWS {what} failed: {_code(exc)}: {msg.splitlines()[0] if msg else ''}".rstrip(": "))


def _waiter(client, name: str, timeout: float, **kw) -> None:
    delay = 2 if timeout < 60 else 5
    try:
        client.get_waiter(name).wait(WaiterConfig={"Delay": delay, "MaxAttempts": max(1, math.ceil(timeout / delay))},
                                     **kw)
    except WaiterError as exc:
        raise ProviderError(f"AWS: {name.replace('_', ' ')} not reached in {timeout:g} s (aws.waiter_timeout): "
                            f"{str(exc).splitlines()[0]}") from None


def key_name(name: str) -> str:
    return f"fleetbook-{name}"


def ensure_key_pair(c, client, name: str, dry_run: bool = False) -> str:
    """Import the fleet's public key as key pair ``fleetbook-<fleet>`` (re-import when the local key changed)."""
    pub = cc.public_key(c, name)
    digest = hashlib.sha256(pub.split()[1].encode()).hexdigest()[:32]
    kn = key_name(name)
    try:
        pairs = client.describe_key_pairs(KeyNames=[kn])["KeyPairs"]
    except ClientError as exc:
        if _code(exc) != "InvalidKeyPair.NotFound":
            raise _fail(exc, "reading key pairs") from None
        pairs = []
    if pairs and _tags(pairs[0]).get("fleetbook-pub") == digest:
        return kn
    if dry_run:
        print(f"[dry run] would send ImportKeyPair {kn} (the fleet's ed25519 public key)")
        return kn
    if pairs:
        client.delete_key_pair(KeyName=kn)
    client.import_key_pair(KeyName=kn, PublicKeyMaterial=pub.encode(), TagSpecifications=[
        {"ResourceType": "key-pair", "Tags": [{"Key": "fleetbook-pub", "Value": digest}]}])
    return kn


def _vpc(c, client) -> str:
    a = c.config.aws
    subnets = fleets.subnets(c)
    if subnets:
        vpcs = {s["VpcId"] for s in client.describe_subnets(SubnetIds=subnets)["Subnets"]}
        if len(vpcs) > 1:
            raise ProviderError(f"aws.subnets are in {len(vpcs)} VPCs ({', '.join(sorted(vpcs))}): list subnets of one VPC "
                                "(one per availability zone); the security group belongs to one")
        return vpcs.pop()
    vpcs = client.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise ProviderError(f"no default VPC in {a.region}: set aws.subnet to a subnet with a route to the internet")
    return vpcs[0]["VpcId"]


def ensure_head_ingress(c, client, gid: str, dry_run: bool = False) -> None:
    """Members of the group (the nodes) may reach the head instance's SSH over the VPC."""
    port = setting(c, "aws.ssh_port")
    if dry_run:
        print(f"[dry run] would send AuthorizeSecurityGroupIngress tcp/{port} from the group itself (head)")
        return
    try:
        client.authorize_security_group_ingress(GroupId=gid, IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": port, "ToPort": port,
            "UserIdGroupPairs": [{"GroupId": gid, "Description": "fleetbook nodes to the head"}]}])
    except ClientError as exc:
        if _code(exc) != "InvalidPermission.Duplicate":
            raise _fail(exc, "opening the head's SSH to the nodes") from None


def ensure_security_group(c, client, dry_run: bool = False) -> str:
    a = c.config.aws
    cidr = str(a.ssh_cidr or "")
    if not cidr:
        raise ProviderError("set aws.ssh_cidr to the address you connect from, e.g. INVOKE_AWS_SSH_CIDR=203.0.113.7/32")
    vpc = _vpc(c, client)
    groups = client.describe_security_groups(Filters=[{"Name": "group-name", "Values": [str(a.security_group)]},
                                                      {"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]
    port = setting(c, "aws.ssh_port")
    perm = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
            "IpRanges": [{"CidrIp": cidr, "Description": "fleetbook operator"}]}
    if dry_run:
        if not groups:
            print(f"[dry run] would send CreateSecurityGroup {a.security_group} in {vpc}")
        print(f"[dry run] would send AuthorizeSecurityGroupIngress tcp/{port} from {cidr}")
        return groups[0]["GroupId"] if groups else "sg-(new)"
    if groups:
        gid = groups[0]["GroupId"]
        others = {r["CidrIp"] for p in groups[0].get("IpPermissions", []) for r in p.get("IpRanges", [])} - {cidr}
        if others:
            print(f"warning: security group {a.security_group} also admits {', '.join(sorted(others))}")
    else:
        gid = client.create_security_group(GroupName=str(a.security_group), VpcId=vpc,
                                           Description="fleetbook: SSH from the operator only")["GroupId"]
    try:
        client.authorize_security_group_ingress(GroupId=gid, IpPermissions=[perm])
    except ClientError as exc:
        if _code(exc) != "InvalidPermission.Duplicate":
            raise _fail(exc, "opening SSH in the security group") from None
    return gid


def newest_baked(c, client) -> dict | None:
    try:
        images = client.describe_images(Owners=["self"], Filters=[
            {"Name": "tag-key", "Values": [cc.IMAGE_HASH_LABEL]}, {"Name": "state", "Values": ["available"]}])["Images"]
    except ClientError:
        return None
    return max(images, key=lambda i: i.get("CreationDate", ""), default=None)


def source_image(c, client, base: bool = False) -> str:
    if not base and c.config.image.use_baked:
        baked = newest_baked(c, client)
        if baked:
            return baked["ImageId"]
    return setting(c, "aws.ami")


def block_devices(c, client, image: str) -> list[dict]:
    """A root volume of ``aws.disk_gb`` (gp3, deleted with the instance); [] when the AMI cannot be read."""
    try:
        if image.startswith("resolve:ssm:"):
            image = boto3.client("ssm", region_name=setting(c, "aws.region")).get_parameter(
                Name=image[len("resolve:ssm:"):])["Parameter"]["Value"]
        (info,) = client.describe_images(ImageIds=[image])["Images"]
    except (ClientError, BotoCoreError, ValueError):
        print(f"warning: cannot read AMI {image}: the root volume keeps the AMI's size (aws.disk_gb ignored)")
        return []
    return [{"DeviceName": info["RootDeviceName"], "Ebs": {
        "VolumeSize": setting(c, "aws.disk_gb"), "VolumeType": "gp3", "DeleteOnTermination": True}}]


def _tags(inst: dict) -> dict:
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
