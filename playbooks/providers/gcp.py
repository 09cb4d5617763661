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

import time
import uuid
from datetime import datetime

from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from playbooks.providers import PENDING, RUNNING, STOPPED, UNREACHABLE, FleetSpec, HeadInstance, Node
from playbooks.providers import cloud as cc
from playbooks.providers import gcp_regional as regional
from playbooks.providers.cloud.hooks import fleet_estimate, shared_hooks
from playbooks.providers.gcp_api import Api, _error_text, _fail, _is_capacity
from playbooks.providers.gcp_setup import (_show, base_image, ensure_firewall, ensure_head_firewall,  # noqa: F401
                                          find_image, head_instance, instance_properties, source_image)
from playbooks.providers.types import ProviderError
from playbooks.settings.defaults import shared_mountpoint
from playbooks.settings import setting

STATES = {"PROVISIONING": PENDING, "STAGING": PENDING, "RUNNING": RUNNING, "STOPPING": STOPPED,
          "SUSPENDING": STOPPED, "SUSPENDED": STOPPED, "TERMINATED": STOPPED, "REPAIRING": UNREACHABLE}


# --- instances -> nodes -----------------------------------------------------------------------------------

def zones(c) -> list[str]:
    """Every zone the fleet's VMs may be in: gcp.zone and the allowed zones (list, wait and delete scan them)."""
    return list(dict.fromkeys([setting(c, "gcp.zone"), *regional.allowed_zones(c)]))


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
    return Node(name=inst.name, host=host, port=setting(c, "gcp.ssh_port"), user=setting(c, "gcp.user"),
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


# --- create -----------------------------------------------------------------------------------------------

def estimate(c, spec: FleetSpec) -> str:
    return fleet_estimate(c, "gcp", spec, zones=regional.allowed_zones(c))


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
    name, min_count = cc.check_spec(spec)
    with_head = image is None and cc.head_mode(c, "gcp", spec.head) == "instance"   # a bake makes no head
    regional.check(c)
    api = Api(c)
    zone = regional.home_zone(c)
    existing = _alive(list_nodes(c, name))
    gap = spec.count - len(existing)
    # a head its TTL stopped is started again (issue 14), never replaced by a second one
    restarted = start_head(c, name, spec.ttl_hours, spec.dry_run)
    need_head = with_head and restarted is None and find_head(c, name, api) is None
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


def wait_ready(c, name: str, timeout: float, only: set[str] | None = None) -> list[Node]:
    api = Api(c)
    where: dict[str, str] = {}

    def lister(c, name):
        raw = _raw(c, api, name)
        where.update({inst.name: zone for zone, inst in raw})
        return [n for n in (_node(c, inst) for _, inst in raw if not cc.is_head(inst.labels))
                if n.state != STOPPED and (only is None or n.name in only)]

    nodes = cc.wait_ready(c, name, timeout, lister, lambda node: host_keys(api, where[node.name], node.name))
    _head_ready(c, api, name, timeout)   # the head instance: its host key pinned from the cloud, it answers SSH
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


def _head_ready(c, api: Api, name: str, timeout: float) -> None:
    """The running head instance's host key pinned from the cloud, and it answers SSH."""
    found = find_head(c, name, api)
    if found is None:
        return

    def head_lister(c, name):
        again = find_head(c, name, api)
        return [again.node] if again else []     # gone: NodesNotReady, one line in fleet.create
    cc.wait_ready(c, name, timeout, head_lister, lambda node: host_keys(api, found.zone, node.name))


def start_head(c, name: str, ttl_hours: float, dry_run: bool = False) -> Node | None:
    """Start the fleet's head instance when it is stopped (its TTL stops it, keeping the shared root on its disk),
    wait until it answers SSH with its host key pinned; returns it, or None when there is no stopped head.
    Compute Engine sets a new termination time (``maxRunDuration`` from then) each time a VM enters RUNNING, so
    the TTL holds again (``ttl_hours`` is for AWS, whose deadline is in the user data)."""
    api = Api(c)
    stopped = [(z, i) for z, i in _raw(c, api, name) if cc.is_head(i.labels) and STATES.get(i.status) == STOPPED]
    if not stopped:
        return None
    zone, inst = stopped[0]
    if dry_run:
        _show("POST", f"projects/{api.project}/zones/{zone}/instances/{inst.name}/start")
        return _node(c, inst)
    deadline = time.monotonic() + api.timeout
    while inst.status == "STOPPING" and time.monotonic() < deadline:   # stopping now: start it once it has
        time.sleep(1.0)
        inst = next((i for z, i in _raw(c, api, name) if i.name == inst.name), inst)
    try:
        api.wait(api.instances.start(project=api.project, zone=zone, instance=inst.name), f"start {inst.name}")
    except gexc.GoogleAPICallError as exc:
        raise _fail(exc, f"starting the head instance {inst.name}") from None
    print(f"head instance {inst.name}: started again (it was stopped, with the shared root on its disk)")
    _head_ready(c, api, name, setting(c, "fleet.ready_timeout"))
    found = find_head(c, name, api)
    return found.node if found else None


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


def capture_image(c, node: Node, digest: str, image_name: str) -> str:
    """Stop the template VM and create image ``image_name`` (family ``image.family``) from its boot disk."""
    api = Api(c)
    zone = str(node.labels.get(cc.ZONE_KEY) or c.config.gcp.zone)   # where it runs, as listed
    try:
        api.wait(api.instances.stop(project=api.project, zone=zone, instance=node.name), f"stop {node.name}")
        image = compute_v1.Image(
            name=image_name, family=setting(c, "image.family"),
            source_disk=f"projects/{api.project}/zones/{zone}/disks/{node.name}",
            labels=cc.check_labels({cc.IMAGE_HASH_LABEL: digest}),
            description=f"fleetbook image.bake, setup steps {digest}")
        api.wait(api.images.insert(project=api.project, image_resource=image), f"image {image_name}")
    except gexc.GoogleAPICallError as exc:
        raise _fail(exc, f"creating image {image_name}") from None
    return image_name


cost_so_far, head, stop_head = shared_hooks("gcp")   # the hooks gcp and aws share
