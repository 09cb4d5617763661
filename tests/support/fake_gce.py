"""A small HTTP fake of the Compute Engine REST API (v1), enough for fleetbook's gcp provider.

It serves on 127.0.0.1, validates names and labels like GCP, and is driven through the real
google-cloud-compute client (``client_options={"api_endpoint": "http://127.0.0.1:PORT"}``).  Implemented:
instances insert / bulkInsert / list / aggregatedList / get / delete / stop / start / getGuestAttributes,
regionInstances.bulkInsert, regions.get, zone, region and global operations get / wait, images insert / list /
get / getFromFamily / delete, firewalls get / insert.

Every instance gets ``natIP = fake.ssh_host`` (a loopback address where a test runs a real sshd) and the guest
attributes ``hostkeys/<type>`` hold ``fake.host_keys`` (that sshd's keys), so readiness and host-key pinning
run end to end; ``fake.addresses[name] = (natIP, networkIP)`` and ``fake.instance_host_keys[name]`` give one
instance (a head instance) its own sshd.  Knobs for failures: ``capacity`` (instances that can still start,
keyed by zone or by ``(zone, machine type)``; a key that is absent means unlimited, and a VM needs room under
both keys), ``http_error_next`` (answer the next bulkInsert with this HTTP error), ``fail_after`` (create this
many, then fail the operation: an abnormal end that leaves VMs behind, which the provider must clean up),
``preempt(name)`` (the VM is gone at once, as a preempted spot VM with instanceTerminationAction=DELETE).
Below ``minCount`` a bulkInsert creates nothing, and generated names continue after the biggest existing number
(in the zone; for a regional request in any zone of the region), as GCE documents.  Operations answer PENDING
when created and are DONE after ``op_polls`` gets (RUNNING before), so callers must poll them.

Regional bulkInsert (``regions/R/instances/bulkInsert``), how the fake places VMs:

- zones: the region's zones (``region_zones``: us-central1 has a, b, c, f; any other region a, b, c) minus the
  zones ``locationPolicy.locations`` marks DENY; a zone the request does not name is allowed, as in GCE
  (``zones/<zone>`` keys only; a zone outside the region or another preference is a 400);
- machine types: those of ``instanceFlexibilityPolicy.instanceSelections`` (by ``rank``, then selection name,
  then as listed); without one, ``instanceProperties.machineType``.  With a flexibility policy the fake ignores
  ``instanceProperties.machineType`` (fleetbook leaves it out).  Each VM gets the first type with room in its zone;
- ``targetShape``: ANY fills the allowed zones in order (a, b, c, ...), each as far as its capacity goes;
  BALANCED deals the VMs out one zone at a time, round the allowed zones that have room; ANY_SINGLE_ZONE (also
  when absent, GCE's default) puts them all in the first zone that can hold ``count``, else in the zone that
  can hold the most.  Real GCE also weighs reservations, quota and preemption risk; the fake only capacity.
The operation is a region operation (``regionOperations.get`` / ``wait``), DONE after ``op_polls`` gets.
"""
from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from tests.support.loopback_http import LoopbackServer

NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
EXHAUSTED = "ZONE_RESOURCE_POOL_EXHAUSTED"
SHAPES = ("ANY", "BALANCED", "ANY_SINGLE_ZONE")
UNLIMITED = float("inf")


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _short(value: str) -> str:
    return str(value).rstrip("/").rsplit("/", 1)[-1]


def _filter_matches(expr: str, obj: dict) -> bool:
    """The subset of the list filter syntax fleetbook uses: ``labels.k = "v"``, ``labels.k:*``, ``name = v``,
    joined by AND (parentheses allowed)."""
    if not expr:
        return True
    for field, op, value in re.findall(r'([a-zA-Z_.-]+)\s*(!=|=|:)\s*"?([^"\s()]*)"?', expr):
        if field.startswith("labels."):
            actual = (obj.get("labels") or {}).get(field[len("labels."):])
        else:
            actual = obj.get(field)
        if op == ":" and value == "*":
            ok = actual is not None
        elif op == "!=":
            ok = actual != value
        else:
            ok = actual is not None and str(actual) == value
        if not ok:
            return False
    return True


class FakeGCE(LoopbackServer):
    def __init__(self, project: str = "fake-project"):
        self.project = project
        self.lock = threading.RLock()
        self.instances: dict[tuple[str, str], dict] = {}   # (zone, name) -> instance
        self.operations: dict[str, dict] = {}
        self.images: dict[tuple[str, str], dict] = {
            ("debian-cloud", "debian-12-bookworm-v20260101"): {
                "name": "debian-12-bookworm-v20260101", "family": "debian-12", "status": "READY",
                "creationTimestamp": "2026-01-01T00:00:00.000+00:00", "labels": {}},
        }
        self.firewalls: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []      # (method, path) of every request
        self.bodies: list[tuple[str, dict]] = []        # (path, body) of every POST
        self.ssh_host = "127.0.0.1"
        self.host_keys: list[str] = []                  # "ssh-ed25519 AAAA..." of the sshd behind ssh_host
        self.addresses: dict[str, tuple[str, str]] = {}  # instance name -> (natIP, networkIP), else defaults
        self.instance_host_keys: dict[str, list[str]] = {}  # instance name -> its own host keys
        self.capacity: dict = {}                        # zone or (zone, machine type) -> instances it can start
        self.region_zones: dict[str, list[str]] = {"us-central1": [f"us-central1-{x}" for x in "abcf"]}
        self.http_error_next: tuple[int, str] | None = None
        self.fail_after: int | None = None
        self.op_polls = 1                               # GETs an operation needs before it is DONE
        self._seq = 1000

    # --- life cycle ------------------------------------------------------------------------------------
    def start(self) -> "FakeGCE":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                    status, payload = fake.dispatch(self.command, self.path, body)
                except ApiError as err:
                    status, payload = err.code, {"error": {"code": err.code, "message": err.message, "errors": [
                        {"message": err.message, "domain": "global", "reason": err.reason}]}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

        return self.serve(Handler, "fake-gce")

    def preempt(self, name: str) -> None:
        """The VM is gone at once, as a preempted spot VM whose instanceTerminationAction is DELETE."""
        with self.lock:
            for key in [k for k in self.instances if k[1] == name]:
                del self.instances[key]

    def saw(self, fragment: str, method: str | None = None) -> int:
        return sum(1 for m, p in self.requests if fragment in p and (method is None or m == method))

    # --- helpers ---------------------------------------------------------------------------------------
    def _id(self) -> str:
        self._seq += 1
        return str(self._seq)

    def _link(self, path: str) -> str:
        return f"{self.endpoint}/compute/v1/projects/{self.project}/{path}"

    def _operation(self, op_type: str, target: str, zone: str | None, work=None, error=None,
                   region: str | None = None) -> dict:
        name = f"operation-{int(time.time() * 1000)}-{self._id()}"
        scope = f"zones/{zone}" if zone else f"regions/{region}" if region else "global"
        op = {"kind": "compute#operation", "id": self._id(), "name": name, "operationType": op_type,
              "targetLink": target, "status": "PENDING", "progress": 0, "insertTime": _now(),
              "selfLink": self._link(f"{scope}/operations/{name}"), "_work": work, "_error": error,
              "_seen": 0}
        if zone:
            op["zone"] = self._link(f"zones/{zone}")
        if region:
            op["region"] = self._link(f"regions/{region}")
        self.operations[name] = op
        return self._public(op)

    @staticmethod
    def _public(op: dict) -> dict:
        return {k: v for k, v in op.items() if not k.startswith("_")}

    def _advance(self, op: dict, finish: bool) -> dict:
        op["_seen"] += 1
        if op["status"] != "DONE" and (finish or op["_seen"] >= self.op_polls):
            if op["_work"]:
                op["_work"]()
            op["status"], op["progress"], op["endTime"] = "DONE", 100, _now()
            if op["_error"]:
                code, reason, message = op["_error"]
                op["error"] = {"errors": [{"code": reason, "message": message}]}
                op["httpErrorStatusCode"], op["httpErrorMessage"] = code, "SERVICE UNAVAILABLE" if code == 503 \
                    else "BAD REQUEST"
        elif op["status"] == "PENDING":
            op["status"] = "RUNNING"
        return self._public(op)

    def _check_labels(self, labels: dict) -> None:
        for k, v in (labels or {}).items():
            if not LABEL_KEY_RE.match(k) or not LABEL_VALUE_RE.match(str(v)):
                raise ApiError(400, f"Invalid value for field 'resource.labels': '{k}={v}'. Label keys and "
                                    "values can only contain lowercase letters, numeric characters, "
                                    "underscores and dashes.")

    def _new_instance(self, zone: str, name: str, props: dict) -> dict:
        if not NAME_RE.match(name):
            raise ApiError(400, f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex "
                                "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?|[1-9][0-9]{0,19})'")
        self._check_labels(props.get("labels"))
        sched = props.get("scheduling") or {}
        if sched.get("maxRunDuration") and sched.get("instanceTerminationAction") not in ("DELETE", "STOP"):
            raise ApiError(400, "maxRunDuration needs instanceTerminationAction")
        nat, internal = self.addresses.get(name, (self.ssh_host, "10.128.0.2"))
        nic = [{"name": "nic0", "network": self._link("global/networks/default"), "networkIP": internal,
                "accessConfigs": [{"name": "External NAT", "type": "ONE_TO_ONE_NAT", "natIP": nat}]}]
        inst = dict(props)
        inst.update({
            "kind": "compute#instance", "id": self._id(), "name": name, "status": "RUNNING",
            "zone": self._link(f"zones/{zone}"),
            "machineType": self._link(f"zones/{zone}/machineTypes/{_short(props.get('machineType', 'e2-small'))}"),
            "networkInterfaces": nic, "creationTimestamp": _now(), "lastStartTimestamp": _now(),
            "selfLink": self._link(f"zones/{zone}/instances/{name}"),
            "disks": [{"boot": True, "source": self._link(f"zones/{zone}/disks/{name}"), "deviceName": name}],
        })
        return inst

    def zones_of(self, region: str) -> list[str]:
        return self.region_zones.get(region, [f"{region}-{x}" for x in "abc"])

    def _take_capacity(self, zone: str, n: int, mtype: str = "") -> int:
        placed, left = self._place([zone], [mtype], n, "ANY", self.capacity)
        self.capacity.update(left)
        return len(placed)

    @staticmethod
    def _place(zones: list[str], types: list[str], count: int, shape: str, capacity: dict):
        """([(zone, type)] for up to ``count`` VMs, the capacity left): see the module docstring."""
        left = dict(capacity)

        def room(z, t):
            return min(left.get(z, UNLIMITED), left.get((z, t), UNLIMITED))

        def zone_room(z):
            return min(left.get(z, UNLIMITED), sum(left.get((z, t), UNLIMITED) for t in types))

        def take(z):
            for t in types:
                if room(z, t) > 0:
                    for key in (z, (z, t)):
                        if key in left:
                            left[key] -= 1
                    return t
            return None

        out: list[tuple[str, str]] = []
        if shape == "ANY_SINGLE_ZONE":
            fits = [z for z in zones if zone_room(z) >= count]
            zones = fits[:1] or sorted(zones, key=zone_room, reverse=True)[:1]
        while len(out) < count:
            moved = False
            for z in zones:
                while len(out) < count and (t := take(z)):
                    out.append((z, t))
                    moved = True
                    if shape == "BALANCED":
                        break
            if not moved:
                break
        return out, left

    # --- routing ---------------------------------------------------------------------------------------
    def dispatch(self, method: str, raw_path: str, body: dict) -> tuple[int, dict]:
        url = urlparse(raw_path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        with self.lock:
            self.requests.append((method, path))
            if method == "POST":
                self.bodies.append((path, body))
            m = re.match(r"^/compute/v1/projects/([^/]+)/(.*)$", path)
            if not m:
                raise ApiError(404, f"not found: {path}", "notFound")
            project, rest = m.groups()
            return self._route(method, project, rest, query, body)

    def _route(self, method, project, rest, query, body):
        parts = rest.split("/")
        if parts[0] == "regions" and len(parts) >= 2:
            return self._regions(method, parts[1], parts[2:], body)
        if parts[0] == "zones" and len(parts) >= 3:
            zone = parts[1]
            if parts[2] == "instances":
                return self._instances(method, project, zone, parts[3:], query, body)
            if parts[2] == "operations" and len(parts) >= 4:
                return self._op(parts[3], finish=len(parts) > 4 and parts[4] == "wait")
        if parts[0] == "global" and len(parts) >= 2:
            if parts[1] == "operations" and len(parts) >= 3:
                return self._op(parts[2], finish=len(parts) > 3 and parts[3] == "wait")
            if parts[1] == "images":
                return self._images(method, project, parts[2:], query, body)
            if parts[1] == "firewalls":
                return self._firewalls(method, parts[2:], body)
        if parts[0] == "aggregated" and parts[1:] == ["instances"]:
            items: dict[str, dict] = {}
            for (zone, _), inst in sorted(self.instances.items()):
                if _filter_matches(query.get("filter", ""), inst):
                    items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(inst)
            return 200, {"kind": "compute#instanceAggregatedList", "items": items}
        raise ApiError(404, f"unknown resource {rest}", "notFound")

    def _op(self, name: str, finish: bool):
        op = self.operations.get(name)
        if not op:
            raise ApiError(404, f"The resource 'operations/{name}' was not found", "notFound")
        return 200, self._advance(op, finish)

    def _instances(self, method, project, zone, parts, query, body):
        if not parts:
            if method == "GET":
                items = [i for (z, _), i in sorted(self.instances.items())
                         if z == zone and _filter_matches(query.get("filter", ""), i)]
                return 200, {"kind": "compute#instanceList", "items": items}
            if method == "POST":  # insert
                inst = self._new_instance(zone, body.get("name", ""), body)
                if (zone, inst["name"]) in self.instances:
                    raise ApiError(409, f"The resource '{inst['name']}' already exists", "alreadyExists")
                if not self._take_capacity(zone, 1, _short(body.get("machineType", ""))):
                    return 200, self._operation("insert", inst["selfLink"], zone,
                                                error=(503, EXHAUSTED, "The zone does not have enough resources"))
                self.instances[(zone, inst["name"])] = inst
                return 200, self._operation("insert", inst["selfLink"], zone)
        name = parts[0]
        if name == "bulkInsert" and method == "POST":
            return self._bulk([zone], body)
        key = (zone, name)
        inst = self.instances.get(key)
        if inst is None:
            raise ApiError(404, f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found",
                           "notFound")
        if len(parts) == 1 and method == "GET":
            return 200, inst
        if len(parts) == 1 and method == "DELETE":
            inst["status"] = "STOPPING"
            return 200, self._operation("delete", inst["selfLink"], zone,
                                        work=lambda: self.instances.pop(key, None))
        if parts[1] == "stop" and method == "POST":
            inst["status"] = "STOPPING"
            return 200, self._operation("stop", inst["selfLink"], zone,
                                        work=lambda: inst.update(status="TERMINATED"))
        if parts[1] == "start" and method == "POST":       # a stopped (TERMINATED) VM runs again, same disk
            if inst["status"] != "TERMINATED":
                raise ApiError(400, f"The instance '{name}' is {inst['status']}, not stopped", "resourceNotReady")
            return 200, self._operation("start", inst["selfLink"], zone,
                                        work=lambda: inst.update(status="RUNNING", lastStartTimestamp=_now()))
        if parts[1] == "getGuestAttributes":
            qpath = query.get("queryPath", "")
            if qpath.rstrip("/") != "hostkeys":
                raise ApiError(404, "The resource was not found", "notFound")
            items = [{"namespace": "hostkeys", "key": k.split()[0], "value": k.split()[1]}
                     for k in self.instance_host_keys.get(name, self.host_keys)]
            return 200, {"kind": "compute#guestAttributes", "queryPath": qpath, "queryValue": {"items": items}}
        raise ApiError(400, f"unsupported {method} on instance {parts}")

    def _regions(self, method, region, parts, body):
        zones = self.zones_of(region)
        if not parts and method == "GET":
            return 200, {"kind": "compute#region", "name": region, "status": "UP",
                         "zones": [self._link(f"zones/{z}") for z in zones],
                         "selfLink": self._link(f"regions/{region}")}
        if parts[:1] == ["operations"] and len(parts) >= 2:
            return self._op(parts[1], finish=len(parts) > 2 and parts[2] == "wait")
        if parts == ["instances", "bulkInsert"] and method == "POST":
            policy = body.get("locationPolicy") or {}
            denied = set()
            for key, loc in (policy.get("locations") or {}).items():
                if not key.startswith("zones/") or key[len("zones/"):] not in zones:
                    raise ApiError(400, f"Invalid value for field 'resource.locationPolicy.locations': '{key}'. "
                                        f"Zone must be a zone of region {region}")
                if (loc or {}).get("preference") not in ("ALLOW", "DENY"):
                    raise ApiError(400, f"Invalid value for field 'resource.locationPolicy.locations[{key}]"
                                        ".preference': must be ALLOW or DENY")
                if loc["preference"] == "DENY":
                    denied.add(key[len("zones/"):])
            shape = policy.get("targetShape") or "ANY_SINGLE_ZONE"
            if shape not in SHAPES:
                raise ApiError(400, f"Invalid value for field 'resource.locationPolicy.targetShape': '{shape}'")
            allowed = [z for z in zones if z not in denied]
            if not allowed:
                raise ApiError(400, "locationPolicy denies every zone of the region")
            return self._bulk(allowed, body, shape=shape, region=region)
        raise ApiError(404, f"unknown resource regions/{region}/{'/'.join(parts)}", "notFound")

    def _machine_types(self, body) -> list[str]:
        selections = ((body.get("instanceFlexibilityPolicy") or {}).get("instanceSelections") or {})
        if not selections:
            mtype = _short((body.get("instanceProperties") or {}).get("machineType", ""))
            if not mtype:
                raise ApiError(400, "Missing required field 'resource.instanceProperties.machineType'")
            return [mtype]
        types: list[str] = []
        for name, sel in sorted(selections.items(), key=lambda kv: (int(kv[1].get("rank") or 0), kv[0])):
            if not NAME_RE.match(name) or not sel.get("machineTypes"):
                raise ApiError(400, f"Invalid instance selection '{name}': it needs a name and machineTypes")
            types += [_short(t) for t in sel["machineTypes"] if _short(t) not in types]
        return types

    def _bulk(self, zones, body, shape="ANY_SINGLE_ZONE", region=None):
        where = f"region '{region}'" if region else f"zone '{zones[0]}'"
        if self.http_error_next:
            code, reason = self.http_error_next
            self.http_error_next = None
            raise ApiError(code, f"{reason}: the {where} does not have enough resources", reason)
        count = int(body.get("count") or 0)
        min_count = int(body.get("minCount") or count)
        pattern = body.get("namePattern", "")
        props = body.get("instanceProperties") or {}
        if count < 1 or not (1 <= min_count <= count):
            raise ApiError(400, "count must be >= 1 and 1 <= minCount <= count")
        run = re.search(r"#+", pattern)
        if not run or pattern.count("#") != len(run.group(0)):
            raise ApiError(400, "namePattern must contain one run of '#'")
        self._check_labels(props.get("labels"))
        # as GCE: numbers start after the biggest number of an existing instance matching the pattern
        width = len(run.group(0))
        match = re.compile("^" + re.escape(pattern[:run.start()]) + r"(\d{%d})" % width
                           + re.escape(pattern[run.end():]) + "$")
        scope = self.zones_of(region) if region else zones
        numbers = [int(m.group(1)) for (z, n) in self.instances if z in scope and (m := match.match(n))]
        first = max(numbers, default=0) + 1
        names = [pattern[:run.start()] + str(i).zfill(width) + pattern[run.end():]
                 for i in range(first, first + count)]
        types = self._machine_types(body)
        for name in names:
            self._new_instance(zones[0], name, props)   # validates every name before creating any
        placed, left = self._place(zones, types, count, shape, self.capacity)
        failing = self.fail_after is not None
        make = min(len(placed), self.fail_after) if failing else len(placed)
        self.fail_after = None
        error = None
        if failing or len(placed) < min_count:
            error = (503, EXHAUSTED, f"The {where} does not have enough resources available")
            if not failing:
                make = 0   # all-or-nothing below minCount, as GCE does: no capacity is used
        if make:
            self.capacity.update(left)   # (a failing operation keeps what it took: the VMs may be left behind)
        for name, (zone, mtype) in zip(names[:make], placed[:make]):
            inst = self._new_instance(zone, name, dict(props, machineType=mtype))
            self.instances[(zone, inst["name"])] = inst
        if region:
            return 200, self._operation("bulkInsert", self._link(f"regions/{region}/instances"), None, error=error,
                                        region=region)
        return 200, self._operation("bulkInsert", self._link(f"zones/{zones[0]}/instances"), zones[0], error=error)

    def _images(self, method, project, parts, query, body):
        if not parts:
            if method == "GET":
                items = [i for (p, _), i in sorted(self.images.items())
                         if p == project and _filter_matches(query.get("filter", ""), i)]
                return 200, {"kind": "compute#imageList", "items": items}
            if method == "POST":
                name = body.get("name", "")
                if not NAME_RE.match(name):
                    raise ApiError(400, f"Invalid value for field 'resource.name': '{name}'")
                self._check_labels(body.get("labels"))
                if (project, name) in self.images:
                    raise ApiError(409, f"The resource '{name}' already exists", "alreadyExists")
                src = body.get("sourceDisk", "")
                zone_disk = re.search(r"zones/([^/]+)/disks/([^/]+)$", src)
                inst = zone_disk and self.instances.get((zone_disk.group(1), zone_disk.group(2)))
                if not inst:
                    raise ApiError(400, f"The source disk '{src}' was not found")
                if inst["status"] != "TERMINATED":
                    raise ApiError(400, f"The disk '{src}' is in use by a running instance")
                image = dict(body, status="READY", id=self._id(), creationTimestamp=_now(),
                             selfLink=self._link(f"global/images/{name}"))
                return 200, self._operation("insert", image["selfLink"], None,
                                            work=lambda: self.images.__setitem__((project, name), image))
        if parts[0] == "family" and len(parts) == 2:
            fam = [i for (p, _), i in self.images.items() if p == project and i.get("family") == parts[1]]
            if not fam:
                raise ApiError(404, f"The resource 'projects/{project}/global/images/family/{parts[1]}' "
                                    "was not found", "notFound")
            return 200, max(fam, key=lambda i: i["creationTimestamp"])
        image = self.images.get((project, parts[0]))
        if image is None:
            raise ApiError(404, f"The resource 'projects/{project}/global/images/{parts[0]}' was not found",
                           "notFound")
        if method == "DELETE":
            return 200, self._operation("delete", image["selfLink"], None,
                                        work=lambda: self.images.pop((project, parts[0]), None))
        return 200, image

    def _firewalls(self, method, parts, body):
        if not parts and method == "POST":
            name = body.get("name", "")
            if name in self.firewalls:
                raise ApiError(409, f"The resource '{name}' already exists", "alreadyExists")
            rule = dict(body, id=self._id(), selfLink=self._link(f"global/firewalls/{name}"))
            self.firewalls[name] = rule
            return 200, self._operation("insert", rule["selfLink"], None)
        if parts and method == "GET":
            if parts[0] not in self.firewalls:
                raise ApiError(404, f"The resource 'global/firewalls/{parts[0]}' was not found", "notFound")
            return 200, self.firewalls[parts[0]]
        raise ApiError(400, "unsupported firewall call")
