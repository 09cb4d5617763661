"""What a ``gcp`` fleet's VMs are made from: the firewall rules (SSH from the operator, SFTP from the nodes to
the head instance), the image (baked or the family's), and the request bodies of a node and of the head instance.
"""
from __future__ import annotations

import json

from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from playbooks.providers import cloud as cc
from playbooks.providers import gcp_regional as regional
from playbooks.providers.gcp_api import Api, _fail
from playbooks.providers.types import ProviderError
from playbooks.settings.defaults import shared_mountpoint
from playbooks.settings import setting


FIREWALL = "fleetbook-ssh"


HEAD_FIREWALL = "fleetbook-head"


HEAD_TAG = "fleetbook-head"


def newest_baked(c, api: Api):
    """The newest image baked by ``image.bake`` in the project, or None."""
    req = compute_v1.ListImagesRequest(project=api.project, filter=f"labels.{cc.IMAGE_HASH_LABEL}:*")
    try:
        images = [i for i in api.images.list(request=req) if i.status in ("READY", "")]
    except gexc.NotFound:
        return None
    return max(images, key=lambda i: i.creation_timestamp, default=None)


def source_image(c, api: Api, base: bool = False) -> str:
    g = c.config.gcp
    if not base and c.config.image.use_baked:
        baked = newest_baked(c, api)
        if baked is not None:
            return f"projects/{api.project}/global/images/{baked.name}"
    if g.image:
        return str(g.image)
    return f"projects/{g.image_project}/global/images/family/{g.image_family}"


def _firewall_rule(c) -> compute_v1.Firewall:
    ranges = cc.split_list(c.config.gcp.ssh_source_ranges)
    return compute_v1.Firewall(
        name=FIREWALL, network=setting(c, "gcp.network"), direction="INGRESS", source_ranges=ranges,
        target_tags=[cc.NETWORK_TAG], description="fleetbook: SSH to fleet nodes from the operator only",
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=[str(setting(c, "gcp.ssh_port"))])])


def _head_rule(c) -> compute_v1.Firewall:
    return compute_v1.Firewall(
        name=HEAD_FIREWALL, network=setting(c, "gcp.network"), direction="INGRESS", source_tags=[cc.NETWORK_TAG],
        target_tags=[HEAD_TAG], description="fleetbook: the nodes reach the head instance's SFTP over the VPC",
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=[str(setting(c, "gcp.ssh_port"))])])


def _existing_firewall(api: Api, name: str):
    """The firewall rule ``name``, or None when there is none."""
    try:
        return api.firewalls.get(project=api.project, firewall=name)
    except gexc.NotFound:
        return None
    except gexc.GoogleAPICallError as exc:
        raise _fail(exc, f"reading firewall {name}") from None


def _insert_firewall(api: Api, rule: compute_v1.Firewall, dry_run: bool) -> None:
    if dry_run:
        _show("POST", f"projects/{api.project}/global/firewalls", compute_v1.Firewall.to_json(rule))
        return
    try:
        api.wait(api.firewalls.insert(project=api.project, firewall_resource=rule), f"firewall {rule.name}")
    except gexc.Conflict:
        pass
    except gexc.GoogleAPICallError as exc:
        raise _fail(exc, f"creating firewall {rule.name}") from None


def ensure_head_firewall(c, api: Api, dry_run: bool = False) -> None:
    """The rule letting the nodes (tag fleetbook) reach the head instance (tag fleetbook-head) on SSH."""
    if c.config.gcp.firewall and _existing_firewall(api, HEAD_FIREWALL) is None:
        _insert_firewall(api, _head_rule(c), dry_run)


def ensure_firewall(c, api: Api, dry_run: bool = False) -> None:
    if not c.config.gcp.firewall:
        return
    if not cc.split_list(c.config.gcp.ssh_source_ranges):
        raise ProviderError("set gcp.ssh_source_ranges to the address(es) you connect from, e.g. "
                            "INVOKE_GCP_SSH_SOURCE_RANGES=203.0.113.7/32 (or gcp.firewall=false to manage it yourself)")
    rule = _existing_firewall(api, FIREWALL)
    if rule is None:
        _insert_firewall(api, _firewall_rule(c), dry_run)
    elif sorted(rule.source_ranges) != sorted(cc.split_list(c.config.gcp.ssh_source_ranges)):
        print(f"warning: firewall {FIREWALL} admits {', '.join(rule.source_ranges)}, not "
              f"gcp.ssh_source_ranges; update it in the console or delete it to let fleetbook recreate it")


def _show(method: str, path: str, body_json: str | None = None) -> None:
    print(f"[dry run] would send {method} {path}")
    if body_json:
        print(json.dumps(json.loads(body_json), indent=1, sort_keys=True))


def instance_properties(c, name: str, spot: bool, ttl_hours: float, image: str,
                        labels: dict | None = None) -> compute_v1.InstanceProperties:
    g = c.config.gcp
    labels = labels or cc.fleet_labels(name, ttl_hours, spot)
    user = str(g.user)
    sched = compute_v1.Scheduling(
        provisioning_model="SPOT" if spot else "STANDARD",
        instance_termination_action="DELETE",
        max_run_duration=compute_v1.Duration(seconds=int(ttl_hours * 3600)),
        automatic_restart=False, on_host_maintenance="TERMINATE")
    metadata = compute_v1.Metadata(items=[
        compute_v1.Items(key="ssh-keys", value=f"{user}:{cc.public_key(c, name)}"),
        compute_v1.Items(key="enable-oslogin", value="FALSE"),        # else ssh-keys metadata is ignored
        compute_v1.Items(key="enable-guest-attributes", value="TRUE"),  # guest agent publishes hostkeys/
        compute_v1.Items(key="startup-script", value=cc.startup_script(None, shared_mountpoint(c))),
    ])
    nic = compute_v1.NetworkInterface(
        network=str(g.network),
        access_configs=[compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")])
    if g.subnetwork:
        nic.subnetwork = str(g.subnetwork)
    disk = compute_v1.AttachedDisk(
        boot=True, auto_delete=True,
        initialize_params=compute_v1.AttachedDiskInitializeParams(source_image=image, disk_size_gb=setting(c, "gcp.disk_gb")))
    return compute_v1.InstanceProperties(
        machine_type=str(g.machine_type), labels=labels, metadata=metadata, scheduling=sched, disks=[disk],
        network_interfaces=[nic], tags=compute_v1.Tags(items=[cc.NETWORK_TAG]))


def head_instance(c, name: str, ttl_hours: float, image: str) -> compute_v1.Instance:
    """The head instance: on-demand (STANDARD), role=head, its own machine type and disk, the same TTL (which
    STOPS it, keeping its disk and the shared root on it), the fleet's key, and a startup script that makes the
    SFTP-only shared root (cloud_common.head_script)."""
    g = c.config.gcp
    props = instance_properties(c, name, False, ttl_hours, image, labels=cc.head_labels(name, ttl_hours))
    for item in props.metadata.items:
        if item.key == "startup-script":
            item.value = cc.head_script(c, name)
    props.disks[0].initialize_params.disk_size_gb = setting(c, "gcp.head_disk_gb")
    props.scheduling.instance_termination_action = "STOP"   # its TTL stops it: the shared root stays (keep.py)
    return compute_v1.Instance(
        name=cc.head_name(name), machine_type=f"zones/{regional.home_zone(c)}/machineTypes/{g.head_machine_type}",
        labels=props.labels, metadata=props.metadata, scheduling=props.scheduling, disks=props.disks,
        network_interfaces=props.network_interfaces, tags=compute_v1.Tags(items=[cc.NETWORK_TAG, HEAD_TAG]))


def base_image(c) -> str:
    return source_image(c, Api(c), base=True)


def find_image(c, digest: str) -> str | None:
    """The name of a baked image carrying ``fleetbook-image-hash=<digest>``, or None."""
    api = Api(c)
    req = compute_v1.ListImagesRequest(project=api.project, filter=f'labels.{cc.IMAGE_HASH_LABEL} = "{digest}"')
    try:
        names = [i.name for i in api.images.list(request=req)]
    except gexc.GoogleAPICallError as exc:
        raise _fail(exc, "listing images") from None
    return names[0] if names else None
