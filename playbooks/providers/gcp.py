"""The ``gcp`` provider: Compute Engine VMs (spot by default) created with one ``bulkInsert``: zonal for one zone
and one machine type, regional (``regionInstances.bulkInsert``) when ``gcp.zones`` / ``gcp.machine_types`` allow
several, letting Compute Engine place the nodes where it has capacity (see gcp_regional.py).

Every VM carries the labels ``fleet=<name>``, ``fleetbook-deadline=<epoch>`` and ``fleetbook-spot``, the
network tag ``fleetbook`` (the firewall rule ``fleetbook-ssh`` admits port 22 from ``gcp.ssh_source_ranges``
only), the fleet's public key in ``ssh-keys`` metadata and a startup script.  The TTL is enforced by GCE itself:
``scheduling.maxRunDuration`` with ``instanceTerminationAction=DELETE``.  Host keys are pinned from the guest
attributes ``hostkeys/`` the guest agent publishes (read through the authenticated API), else from the serial
console, else on first use into the fleet's own known_hosts.

``gcp.endpoint`` points every client (operations polling included) at another endpoint, e.g. tests/fake_gce.py.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime

from google.api_core import exceptions as gexc
from google.cloud import compute_v1
from playbooks.providers.types import ProviderError

from playbooks.providers import PENDING, RUNNING, STOPPED, UNREACHABLE, FleetSpec, HeadInstance, Node
from playbooks.settings.defaults import shared_mountpoint
from playbooks.providers import cloud as cc
from playbooks.providers.cloud import head_instance as on_head
from playbooks.providers import gcp_regional as regional

STATES = {"PROVISIONING": PENDING, "STAGING": PENDING, "RUNNING": RUNNING, "STOPPING": STOPPED,
          "SUSPENDING": STOPPED, "SUSPENDED": STOPPED, "TERMINATED": STOPPED, "REPAIRING": UNREACHABLE}
FIREWALL = "fleetbook-ssh"
HEAD_FIREWALL = "fleetbook-head"
HEAD_TAG = "fleetbook-head"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
OPERATIONS = {"zone_operations": compute_v1.ZoneOperationsClient,
              "region_operations": compute_v1.RegionOperationsClient,
              "global_operations": compute_v1.GlobalOperationsClient}
CAPACITY_REASONS = ("ZONE_RESOURCE_POOL_EXHAUSTED", "RESOURCE_POOL_EXHAUSTED", "QUOTA_EXCEEDED",
                    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "resourceExhausted")


# --- clients ----------------------------------------------------------------------------------------------

class Api:
    """The Compute clients for one call, all on ``gcp.endpoint`` when it is set (operations polling too)."""

    def __init__(self, c):
        g = c.config.gcp
        self.endpoint = str(g.endpoint or "")
        self.credentials, project = _credentials(c)
        self.project = str(g.project or project or "")
        if not self.project:
            raise ProviderError("no GCP project: set gcp.project (INVOKE_GCP_PROJECT) or `gcloud config set project ...`")
        self.timeout = float(g.operation_timeout)
        self._clients: dict[str, object] = {}

    def _make(self, cls):
        kw = {"credentials": self.credentials, "transport": "rest"}
        if self.endpoint:
            kw["client_options"] = {"api_endpoint": self.endpoint}
        return cls(**kw)

    def _client(self, key: str, cls, ops: str | None):
        if key not in self._clients:
            client = self._make(cls)
            if ops and self.endpoint:
                # result() polls through a lazily built operations client on the DEFAULT endpoint: point it here
                client._transport._extended_operations_services[ops] = self._make(OPERATIONS[ops])
            self._clients[key] = client
        return self._clients[key]

    @property
    def instances(self) -> compute_v1.InstancesClient:
        return self._client("instances", compute_v1.InstancesClient, "zone_operations")

    @property
    def region_instances(self) -> compute_v1.RegionInstancesClient:
        return self._client("region_instances", compute_v1.RegionInstancesClient, "region_operations")

    @property
    def regions(self) -> compute_v1.RegionsClient:
        return self._client("regions", compute_v1.RegionsClient, None)

    @property
    def images(self) -> compute_v1.ImagesClient:
        return self._client("images", compute_v1.ImagesClient, "global_operations")

    @property
    def firewalls(self) -> compute_v1.FirewallsClient:
        return self._client("firewalls", compute_v1.FirewallsClient, "global_operations")

    def wait(self, op, what: str):
        """Wait for an extended operation; GoogleAPICallError on failure, ProviderError on timeout."""
        try:
            return op.result(timeout=self.timeout)
        except TimeoutError:
            raise ProviderError(f"GCP {what} did not finish in {self.timeout:g} s (gcp.operation_timeout); "
                       "check `invoke fleet.list` and the console") from None


def _credentials(c):
    g = c.config.gcp
    mode = str(g.credentials or "")
    if mode == "anonymous" or (not mode and str(g.endpoint or "").startswith("http://")):
        # plain http is a fake or a local proxy: never send a real token over it
        from google.auth.credentials import AnonymousCredentials
        return AnonymousCredentials(), ""
    try:
        if mode:
            from google.oauth2 import service_account
            creds = service_account.Credentials.from_service_account_file(mode, scopes=SCOPES)
            return creds, creds.project_id
        import google.auth
        return google.auth.default(scopes=SCOPES)
    except (OSError, ValueError) as exc:
        raise ProviderError(f"cannot read GCP credentials {mode!r}: {exc}") from None
    except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError
        if type(exc).__name__ == "DefaultCredentialsError":
            raise ProviderError("no GCP credentials: run `gcloud auth application-default login` or set gcp.credentials "
                       "to a service-account key file") from None
        raise


def _fail(exc: Exception, what: str) -> ProviderError:
    text = _error_text(exc)
    if isinstance(exc, (gexc.Unauthorized, gexc.Forbidden)) and not _is_capacity(exc):
        return ProviderError(f"GCP refused {what}: {text}; check the credentials and that the Compute API is enabled")
    return ProviderError(f"GCP {what} failed: {text}")


def _error_text(exc: Exception) -> str:
    reasons = []
    for e in getattr(exc, "errors", None) or []:
        if isinstance(e, dict):
            reasons.append(str(e.get("reason") or e.get("code") or ""))
        else:
            reasons.append(str(getattr(e, "code", "") or getattr(e, "reason", "") or ""))
    msg = re.sub(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ", "", str(getattr(exc, "message", None) or exc))  # no URL
    reasons = [r for r in reasons if r and r not in msg]
    return " ".join([*reasons, str(msg).splitlines()[0] if msg else type(exc).__name__]).strip()


def _is_capacity(exc: Exception) -> bool:
    text = _error_text(exc) + str(exc)
    return isinstance(exc, gexc.ServiceUnavailable) or any(r in text for r in CAPACITY_REASONS)


# --- instances -> nodes -----------------------------------------------------------------------------------

def zones(c) -> list[str]:
    """Every zone the fleet's VMs may be in: gcp.zone and the allowed zones (list, wait and delete scan them)."""
    return list(dict.fromkeys([str(c.config.gcp.zone), *regional.allowed_zones(c)]))


def _short(url: str) -> str:
    return str(url or "").rstrip("/").rsplit("/", 1)[-1]


def _epoch(stamp: str) -> float | None:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None
    except ValueError:
        return None


def _node(c, inst) -> Node:
    host = ""
    for nic in inst.network_interfaces:
        for ac in nic.access_configs:
            host = host or ac.nat_i_p
        host = host or nic.network_i_p
    return Node(name=inst.name, host=host, port=int(c.config.gcp.ssh_port), user=str(c.config.gcp.user),
                state=STATES.get(inst.status, PENDING), id=str(inst.id),
                labels=cc.node_facts(dict(inst.labels), _short(inst.zone), _short(inst.machine_type)),
                started_at=_epoch(inst.last_start_timestamp or inst.creation_timestamp),
                mountpoint=shared_mountpoint(c))


def _raw(c, api: Api, name: str) -> list[tuple[str, object]]:
    out = []
    for zone in zones(c):
        req = compute_v1.ListInstancesRequest(project=api.project, zone=zone,
                                              filter=f'labels.{cc.FLEET_LABEL} = "{name}"')
        try:
            out += [(zone, inst) for inst in api.instances.list(request=req)]
        except gexc.GoogleAPICallError as exc:
            raise _fail(exc, f"listing instances in {zone}") from None
    return out


def list_nodes(c, name: str) -> list[Node]:
    """The fleet's workers (a head instance, ``role=head``, is not a node)."""
    api = Api(c)
    return [_node(c, inst) for _, inst in _raw(c, api, name) if not cc.is_head(inst.labels)]


def _internal(inst) -> str:
    return next((nic.network_i_p for nic in inst.network_interfaces if nic.network_i_p), "")


def find_head(c, name: str, api: Api | None = None) -> HeadInstance | None:
    """The fleet's head instance (as a Node, its internal address, its zone), or None when it has none."""
    for zone, inst in _raw(c, api or Api(c), name):
        if cc.is_head(inst.labels) and inst.status not in ("STOPPING", "TERMINATED"):
            return HeadInstance(node=_node(c, inst), private_ip=_internal(inst), zone=zone)
    return None


def list_all(c) -> list[Node]:
    """Every VM carrying a ``fleet`` label in ``gcp.zone`` + ``gcp.zones`` (every zone when gcp.zones is empty)."""
    api = Api(c)
    wanted = set(zones(c)) if cc.split_list(c.config.gcp.zones) else set()
    req = compute_v1.AggregatedListInstancesRequest(project=api.project, filter=f"labels.{cc.FLEET_LABEL}:*")
    nodes = []
    try:
        for scope, scoped in api.instances.aggregated_list(request=req):
            if wanted and scope.rsplit("/", 1)[-1] not in wanted:
                continue
            nodes += [_node(c, inst) for inst in scoped.instances]
    except gexc.GoogleAPICallError as exc:
        raise _fail(exc, "listing instances") from None
    return nodes


# --- images and firewall ----------------------------------------------------------------------------------

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
        name=FIREWALL, network=str(c.config.gcp.network), direction="INGRESS", source_ranges=ranges,
        target_tags=[cc.NETWORK_TAG], description="fleetbook: SSH to fleet nodes from the operator only",
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=[str(c.config.gcp.ssh_port)])])


def _head_rule(c) -> compute_v1.Firewall:
    return compute_v1.Firewall(
        name=HEAD_FIREWALL, network=str(c.config.gcp.network), direction="INGRESS", source_tags=[cc.NETWORK_TAG],
        target_tags=[HEAD_TAG], description="fleetbook: the nodes reach the head instance's SFTP over the VPC",
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=[str(c.config.gcp.ssh_port)])])


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


# --- create -----------------------------------------------------------------------------------------------

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
        initialize_params=compute_v1.AttachedDiskInitializeParams(source_image=image, disk_size_gb=int(g.disk_gb)))
    return compute_v1.InstanceProperties(
        machine_type=str(g.machine_type), labels=labels, metadata=metadata, scheduling=sched, disks=[disk],
        network_interfaces=[nic], tags=compute_v1.Tags(items=[cc.NETWORK_TAG]))


def estimate(c, spec: FleetSpec) -> str:
    line = cc.estimate(c, "gcp", spec.count, spec.spot, spec.ttl_hours, zones=regional.allowed_zones(c))
    if cc.head_mode(c, "gcp", spec.head) == "instance":
        g = c.config.gcp
        price = cc.price_per_hour(c, "gcp", False, str(g.head_machine_type))
        line += (f"\n      + head instance 1 x {g.head_machine_type} (on-demand, {g.head_disk_gb} GB disk) at "
                 + (f"${price:.4f}/h" if price is not None else "an unknown price (gcp.price_on_demand)"))
    return line


def head_instance(c, name: str, ttl_hours: float, image: str) -> compute_v1.Instance:
    """The head instance: on-demand (STANDARD), role=head, its own machine type and disk, the same TTL (which
    STOPS it, keeping its disk and the shared root on it), the fleet's key, and a startup script that makes the
    SFTP-only shared root (cloud_common.head_script)."""
    g = c.config.gcp
    props = instance_properties(c, name, False, ttl_hours, image, labels=cc.head_labels(name, ttl_hours))
    for item in props.metadata.items:
        if item.key == "startup-script":
            item.value = cc.head_script(c, name)
    props.disks[0].initialize_params.disk_size_gb = int(g.head_disk_gb)
    props.scheduling.instance_termination_action = "STOP"   # its TTL stops it: the shared root stays (keep.py)
    return compute_v1.Instance(
        name=cc.head_name(name), machine_type=f"zones/{regional.home_zone(c)}/machineTypes/{g.head_machine_type}",
        labels=props.labels, metadata=props.metadata, scheduling=props.scheduling, disks=props.disks,
        network_interfaces=props.network_interfaces, tags=compute_v1.Tags(items=[cc.NETWORK_TAG, HEAD_TAG]))


def _create_head(c, api: Api, spec: FleetSpec, image: str, new_nodes) -> None:
    """Insert the head instance; on failure delete it and the nodes this call started (``new_nodes()``)."""
    zone = regional.home_zone(c)
    try:
        ensure_head_firewall(c, api)
        op = api.instances.insert(request=compute_v1.InsertInstanceRequest(
            project=api.project, zone=zone, instance_resource=head_instance(c, spec.name, spec.ttl_hours, image),
            request_id=str(uuid.uuid4())))
        api.wait(op, "head insert")
        print(f"head instance {cc.head_name(spec.name)}: {c.config.gcp.head_machine_type}, on-demand, "
              f"{c.config.gcp.head_disk_gb} GB; the nodes mount it over the VPC")
    except (gexc.GoogleAPICallError, ProviderError) as exc:
        new = new_nodes()
        leftover = {cc.head_name(spec.name): zone} if find_head(c, spec.name, api) else {}
        _delete(c, api, {**leftover, **{n.name: n.labels[cc.ZONE_KEY] for n in new}})
        what = exc.message if isinstance(exc, ProviderError) else _error_text(exc)
        raise ProviderError(f"GCP could not create the head instance of fleet {spec.name} ({what}); deleted it and the "
                   f"{len(new)} node(s) this call had started. Try another gcp.zone or gcp.head_machine_type, "
                   "or --head tunnel") from None


def _alive(nodes: list[Node]) -> list[Node]:
    return [n for n in nodes if n.state in (RUNNING, PENDING, UNREACHABLE)]


def create(c, spec: FleetSpec, image: str | None = None) -> list[Node]:
    """Create the gap up to ``spec.count`` with one bulkInsert (zonal, or regional over several zones and machine
    types); clean up when fewer than min_count start.

    ``image`` overrides the source image (image.bake starts its template from the base image)."""
    name = cc.check_name(spec.name)
    if spec.count < 1:
        raise ProviderError("the fleet needs at least one node (-n)")
    min_count = spec.min_count or spec.count
    if not 1 <= min_count <= spec.count:
        raise ProviderError(f"--min {min_count} must be between 1 and -n {spec.count}")
    with_head = image is None and cc.head_mode(c, "gcp", spec.head) == "instance"   # a bake makes no head
    regional.check(c)
    api = Api(c)
    zone = regional.home_zone(c)
    existing = _alive(list_nodes(c, name))
    gap = spec.count - len(existing)
    need_head = with_head and find_head(c, name, api) is None
    if gap <= 0 and not need_head:
        return existing
    image = image or source_image(c, api)
    resource = compute_v1.BulkInsertInstanceResource(
        count=max(gap, 1), min_count=max(1, min(gap, min_count - len(existing))), name_pattern=f"{name}-####",
        instance_properties=instance_properties(c, name, spec.spot, spec.ttl_hours, image))
    path, send = _bulk_request(c, api, resource, zone) if gap > 0 else ("", None)
    if spec.dry_run:
        ensure_firewall(c, api, dry_run=True)
        if gap > 0:
            _show("POST", path, compute_v1.BulkInsertInstanceResource.to_json(resource))
        if need_head:
            ensure_head_firewall(c, api, dry_run=True)
            _show("POST", f"projects/{api.project}/zones/{zone}/instances",
                  compute_v1.Instance.to_json(head_instance(c, name, spec.ttl_hours, image)))
        return existing
    ensure_firewall(c, api)
    before = {n.name for n in existing}
    if gap > 0:
        try:
            api.wait(send(), "bulkInsert")
        except gexc.GoogleAPICallError as exc:
            existing = _after_failure(c, api, spec, before, min_count, exc)   # raises below --min
    if need_head:
        _create_head(c, api, spec, image, lambda: [n for n in list_nodes(c, name) if n.name not in before])
    nodes = _alive(list_nodes(c, name))
    if len(nodes) < spec.count:
        print(f"warning: fleet {name}: {len(nodes)} of {spec.count} nodes started (at least --min {min_count})")
    return nodes


def _bulk_request(c, api: Api, resource, zone: str):
    """(the request's path, a function sending it): zonal in ``zone``, or regional over the allowed zones."""
    if not regional.is_regional(c):
        return f"projects/{api.project}/zones/{zone}/instances/bulkInsert", lambda: api.instances.bulk_insert(
            request=compute_v1.BulkInsertInstanceRequest(project=api.project, zone=zone, request_id=str(uuid.uuid4()),
                                                         bulk_insert_instance_resource_resource=resource))
    region = regional.region(c)
    try:
        regional.regional_resource(c, regional.region_zones(api, region), resource)
    except gexc.GoogleAPICallError as exc:
        raise _fail(exc, f"reading region {region}") from None
    return f"projects/{api.project}/regions/{region}/instances/bulkInsert", lambda: api.region_instances.bulk_insert(
        request=compute_v1.BulkInsertRegionInstanceRequest(project=api.project, region=region,
                                                           request_id=str(uuid.uuid4()),
                                                           bulk_insert_instance_resource_resource=resource))


def _after_failure(c, api: Api, spec: FleetSpec, before: set[str], min_count: int, exc: Exception) -> list[Node]:
    """Keep a partial fleet only when it reaches min_count; otherwise delete what this call created."""
    nodes = _alive(list_nodes(c, spec.name))
    what = _error_text(exc)
    if len(nodes) >= min_count:
        print(f"warning: fleet {spec.name}: {len(nodes)} of {spec.count} nodes started ({what}); "
              f"continuing with them (>= --min {min_count})")
        return nodes
    new = [n for n in nodes if n.name not in before]
    if new:
        _delete(c, api, {n.name: n.labels[cc.ZONE_KEY] for n in new})
    cleaned = f"deleted the {len(new)} node(s) it had started" if new else "nothing was left running"
    if _is_capacity(exc):
        raise regional.capacity_error(c, spec.count, spec.spot, what, cleaned) from None
    raise ProviderError(f"GCP could not create fleet {spec.name}: {what}; {cleaned}") from None


# --- readiness and host keys ------------------------------------------------------------------------------

def host_keys(api: Api, zone: str, instance: str) -> list[str]:
    """The VM's host keys from a trusted source: guest attributes ``hostkeys/``, else the serial console."""
    try:
        attrs = api.instances.get_guest_attributes(request=compute_v1.GetGuestAttributesInstanceRequest(
            project=api.project, zone=zone, instance=instance, query_path="hostkeys/"))
        keys = [f"{e.key} {e.value}" for e in attrs.query_value.items if e.namespace in ("hostkeys", "")]
        if keys:
            return keys
    except gexc.GoogleAPICallError:
        pass
    try:
        out = api.instances.get_serial_port_output(request=compute_v1.GetSerialPortOutputInstanceRequest(
            project=api.project, zone=zone, instance=instance, port=1))
        return cc.parse_console_host_keys(out.contents)
    except gexc.GoogleAPICallError:
        return []


def wait_ready(c, name: str, timeout: float) -> list[Node]:
    api = Api(c)
    where: dict[str, str] = {}

    def lister(c, name):
        raw = _raw(c, api, name)
        where.update({inst.name: zone for zone, inst in raw})
        return [n for n in (_node(c, inst) for _, inst in raw if not cc.is_head(inst.labels)) if n.state != STOPPED]

    nodes = cc.wait_ready(c, name, timeout, lister, lambda node: host_keys(api, where[node.name], node.name))
    found = find_head(c, name, api)
    if found is not None:   # the head instance: its host key pinned from the cloud, it answers SSH
        def head_lister(c, name):
            again = find_head(c, name, api)
            return [again.node] if again else []     # gone: NodesNotReady, one line in fleet.create
        cc.wait_ready(c, name, timeout, head_lister, lambda node: host_keys(api, found.zone, node.name))
    return nodes


# --- terminate --------------------------------------------------------------------------------------------

def _delete(c, api: Api, targets: dict[str, str]) -> None:
    """Delete instances {name: zone}, then wait for every operation; "already gone" is success."""
    ops = []
    for inst, zone in targets.items():
        try:
            ops.append((inst, api.instances.delete(project=api.project, zone=zone, instance=inst)))
        except gexc.NotFound:
            continue
        except gexc.GoogleAPICallError as exc:
            raise _fail(exc, f"deleting {inst}") from None
    for inst, op in ops:
        try:
            api.wait(op, f"delete {inst}")
        except gexc.NotFound:
            continue
        except gexc.GoogleAPICallError as exc:
            raise _fail(exc, f"deleting {inst}") from None


def head_node(c, name: str):
    """The fleet's head instance as a Node in any state (stopped too), or None: what ``keep.check`` asks."""
    return next((_node(c, inst) for _, inst in _raw(c, Api(c), name) if cc.is_head(inst.labels)), None)


def terminate(c, name: str, dry_run: bool = False, keep_head: bool = False) -> int:
    """Delete every VM of the fleet; with ``keep_head`` the head instance (and the shared root on it) stays."""
    api = Api(c)

    def listed():
        return [(z, i) for z, i in _raw(c, api, name) if not (keep_head and cc.is_head(i.labels))]

    raw = listed()
    if dry_run:
        for zone, inst in raw:
            _show("DELETE", f"projects/{api.project}/zones/{zone}/instances/{inst.name}")
        return len(raw)
    removed: set[str] = set()
    deadline = time.monotonic() + api.timeout
    cc.forget_hosts(c, name, [_node(c, inst) for _, inst in raw])
    cc.stop_head(c, name)
    while raw:
        todo = {inst.name: zone for zone, inst in raw if inst.name not in removed or inst.status != "STOPPING"}
        _delete(c, api, todo)
        removed |= set(todo)
        raw = listed()
        if raw and time.monotonic() > deadline:
            raise ProviderError(f"fleet {name}: {len(raw)} VM(s) still listed after {api.timeout:g} s: "
                       f"{', '.join(i.name for _, i in raw)}; run fleet.down again")
        if raw:
            time.sleep(1.0)
    return len(removed)


def kill_node(c, name: str, node: str) -> None:
    """Delete one VM without waiting, like a preemption."""
    api = Api(c)
    for zone, inst in _raw(c, api, name):
        if inst.name == node:
            api.instances.delete(project=api.project, zone=zone, instance=node)


# --- image bake (driven by playbooks/image.py) ------------------------------------------------------------

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


def capture_image(c, template: str, node: Node, digest: str, image_name: str) -> str:
    """Stop the template VM and create image ``image_name`` (family ``image.family``) from its boot disk."""
    api = Api(c)
    zone = next((z for z, inst in _raw(c, api, template) if inst.name == node.name), str(c.config.gcp.zone))
    try:
        api.wait(api.instances.stop(project=api.project, zone=zone, instance=node.name), f"stop {node.name}")
        image = compute_v1.Image(
            name=image_name, family=str(c.config.image.family),
            source_disk=f"projects/{api.project}/zones/{zone}/disks/{node.name}",
            labels=cc.check_labels({cc.IMAGE_HASH_LABEL: digest}),
            description=f"fleetbook image.bake, setup steps {digest}")
        api.wait(api.images.insert(project=api.project, image_resource=image), f"image {image_name}")
    except gexc.GoogleAPICallError as exc:
        raise _fail(exc, f"creating image {image_name}") from None
    return image_name


def cost_so_far(c, record, elapsed: float | None = None) -> float | None:
    """USD spent so far by a run's nodes (a run record) or by a list of Nodes; None when the price is unknown."""
    return cc.run_cost(c, "gcp", record, elapsed, list_nodes, find_head=find_head)


def head(c, fleet: str):
    """Where the nodes mount the shared disk from: the fleet's head instance (its internal address) when it has
    one, else this machine through one reverse tunnel per node."""
    found = find_head(c, fleet)
    if found is not None:
        return on_head.instance_head(c, "gcp", fleet, found.node, found.private_ip, list_nodes)
    return cc.tunnel_head(c, "gcp", fleet, list_nodes)


def remote_head(c, fleet: str):
    """The head instance's shared root for runstate/progress, or None (tunnel head: this machine's disk)."""
    return on_head.remote_head(c, "gcp", fleet, find_head)


def stop_head(c, fleet: str) -> int:
    """Close the fleet's reverse tunnels and stop its head sshd (fleet.down does this too)."""
    return cc.stop_head(c, fleet)
