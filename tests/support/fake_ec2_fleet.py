"""EC2 Fleet over moto: a loopback HTTP proxy in front of ``moto_server`` that answers ``CreateFleet`` itself and
forwards every other request to moto untouched.

Why: moto 5.2.5's ``create_fleet`` (tried against moto_server here) accepts an instant fleet and returns its
``Instances``, with the request's instance tags, the key pair and the user data, but falls short where fleetbook
needs it:

1. placement: every allocation strategy except ``diversified`` (so ``price-capacity-optimized`` too) puts the
   whole ``TotalTargetCapacity`` in ONE override, the cheapest by ``MaxPrice`` or the first when none has a
   price: no spread over subnets and types, no capacity model, so never a partial fleet and never ``Errors``;
2. launch template fields dropped for fleet instances: ``SecurityGroupIds`` (instances land in the VPC's
   ``default`` group), ``InstanceInitiatedShutdownBehavior`` (comes out ``stop``: fleetbook's TTL power-off would
   no longer terminate), ``MetadataOptions`` (``HttpTokens`` comes out ``optional``), ``BlockDeviceMappings``
   (an 8 GB gp2 root instead of the template's volume);
3. spot instances come from ``persistent`` spot requests (an instant fleet's are one-time);
4. ``SpotOptions.MinTargetCapacity`` is accepted and ignored (fleetbook does not send it: it needs
   ``SingleAvailabilityZone`` or ``SingleInstanceType``).

What the proxy does for ``CreateFleet`` (``Type=instant``; anything else is a 400): it reads the launch template
version from moto (``DescribeLaunchTemplateVersions``), places the target capacity over the overrides (below),
and starts each pool's share with moto's own ``RunInstances``: the template's data, the override's ``SubnetId``
and ``InstanceType``, one-time spot market options when ``DefaultTargetCapacityType`` is ``spot``, the request's
``instance`` tags.  So every instance is a real moto instance with its security group, shutdown behaviour, IMDS
options, volume and tags.  It answers in the ``CreateFleet`` response shape of the EC2 API model (``FleetId``,
``Instances``, ``Errors``).  Not implemented: ``maintain``/``request`` fleets, ``DescribeFleets`` of these fleets,
``ClientToken`` idempotency, weights, priorities.

Placement (``price-capacity-optimized``, approximated): a pool is one override (subnet x type).  ``capacity`` maps
a subnet id, an instance type or ``(subnet, type)`` to the instances still available (absent: unlimited; a pool
needs room under every key that matches it).  Each instance goes to the pool with the most room left, ties to the
cheaper type (``prices``: type -> USD/h), then to the request's order.  With plenty of room everywhere, all land
in the first pool; with room for 4 per pool, 20 instances spread over 5 pools.  What cannot be placed is not
launched and is reported in ``Errors`` (``InsufficientInstanceCapacity``, one per exhausted pool): an instant
fleet's partial fulfilment.

``calls`` counts the requests the client sent, by ``Action`` (the proxy's own calls to moto are not counted);
``fleets`` keeps each CreateFleet request as nested dicts and lists under the query's parameter names.
"""
from __future__ import annotations

import base64
import http.client
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, urlparse
from xml.sax.saxutils import escape

import boto3
import botocore.session

from tests.support.loopback_http import LoopbackServer

UNLIMITED = float("inf")
INSUFFICIENT = ("InsufficientInstanceCapacity", "There is no Spot capacity available that matches your request.")


def unflatten(params: dict[str, str]) -> dict:
    """``{"A.1.B": "x"}`` -> ``{"A": [{"B": "x"}]}`` (EC2 query parameters back into nested data)."""
    root: dict = {}
    for key, value in params.items():
        node = root
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def fix(node):
        if not isinstance(node, dict):
            return node
        if node and all(k.isdigit() for k in node):
            return [fix(node[k]) for k in sorted(node, key=int)]
        return {k: fix(v) for k, v in node.items()}
    return fix(root)


def to_xml(shape, value) -> str:
    """Serialize ``value`` as the EC2 query protocol's XML for botocore output ``shape``."""
    if shape.type_name == "structure":
        return "".join(f"<{m.serialization.get('name', n)}>{to_xml(m, value[n])}</{m.serialization.get('name', n)}>"
                       for n, m in shape.members.items() if n in value)
    if shape.type_name == "list":
        return "".join(f"<item>{to_xml(shape.member, v)}</item>" for v in value)
    return escape(str(value).lower() if isinstance(value, bool) else str(value))


class FakeEC2Fleet(LoopbackServer):
    def __init__(self, moto_url: str):
        self.moto = urlparse(moto_url)
        self.moto_url = moto_url
        self.lock = threading.Lock()
        self.model = botocore.session.get_session().get_service_model("ec2")
        self.reset()

    def reset(self) -> None:
        self.capacity: dict = {}
        self.prices: dict[str, float] = {}
        self.calls: Counter = Counter()
        self.fleets: list[dict] = []

    # --- life cycle ------------------------------------------------------------------------------------
    def start(self) -> "FakeEC2Fleet":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                form = dict(parse_qsl(body.decode(errors="replace"))) if body else {}
                action = form.get("Action") or dict(parse_qsl(urlparse(self.path).query)).get("Action", "")
                if action:
                    with fake.lock:
                        fake.calls[action] += 1
                if action == "CreateFleet":
                    status, headers, data = fake.create_fleet(form, self.headers.get("Authorization", ""))
                else:
                    status, headers, data = fake.forward(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        return self.serve(Handler, "fake-ec2-fleet")

    def forward(self, method: str, path: str, headers: dict, body: bytes):
        conn = http.client.HTTPConnection(self.moto.hostname, self.moto.port, timeout=60)
        try:
            headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    # --- CreateFleet ----------------------------------------------------------------------------------
    def _moto(self, authorization: str):
        scope = authorization.split("Credential=", 1)[-1].split(",", 1)[0].split("/")
        key, region = (scope[0], scope[2]) if len(scope) >= 3 else ("testing", "us-east-1")
        return boto3.session.Session(aws_access_key_id=key, aws_secret_access_key="testing").client(
            "ec2", region_name=region, endpoint_url=self.moto_url)

    def _error(self, code: str, message: str):
        xml = (f"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{escape(code)}</Code>"
               f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>")
        return 400, [("Content-Type", "text/xml")], xml.encode()

    def _place(self, pools: list[tuple[str, str]], count: int) -> list[int]:
        """How many instances each pool gets (see the module docstring); takes them from ``capacity``."""
        def room(pool):
            subnet, itype = pool
            return min(self.capacity.get(k, UNLIMITED) for k in (subnet, itype, (subnet, itype)))
        got = [0] * len(pools)
        for _ in range(count):
            order = sorted(range(len(pools)), key=lambda i: (-room(pools[i]), self.prices.get(pools[i][1], 0), i))
            best = order[0] if order and room(pools[order[0]]) > 0 else None
            if best is None:
                break
            got[best] += 1
            for k in (pools[best][0], pools[best][1], tuple(pools[best])):
                if k in self.capacity:
                    self.capacity[k] -= 1
        return got

    def create_fleet(self, form: dict, authorization: str):
        req = unflatten({k: v for k, v in form.items() if k not in ("Action", "Version")})
        with self.lock:
            self.fleets.append(req)
        if req.get("Type") != "instant":
            return self._error("Unsupported", "the CreateFleet layer over moto implements Type=instant only")
        client = self._moto(authorization)
        target = req.get("TargetCapacitySpecification", {})
        count = int(target.get("TotalTargetCapacity", 0))
        spot = target.get("DefaultTargetCapacityType", "on-demand") == "spot"
        instance_tags = [t for spec in req.get("TagSpecification", []) if spec.get("ResourceType") == "instance"
                         for t in spec.get("Tag", [])]
        pools = []   # (subnet, type, template spec, template data)
        for config in req.get("LaunchTemplateConfigs", []):
            spec = config["LaunchTemplateSpecification"]
            ref = {"LaunchTemplateId": spec["LaunchTemplateId"]} if "LaunchTemplateId" in spec else \
                {"LaunchTemplateName": spec["LaunchTemplateName"]}
            try:
                (version,) = client.describe_launch_template_versions(
                    **ref, Versions=[spec.get("Version", "$Default")])["LaunchTemplateVersions"]
            except Exception as exc:  # noqa: BLE001 - answered as the API would
                return self._error("InvalidLaunchTemplateId.NotFound", str(exc))
            lt_spec = {"LaunchTemplateId": version["LaunchTemplateId"], "Version": str(version["VersionNumber"])}
            for override in config.get("Overrides") or [{}]:
                pools.append((override.get("SubnetId", ""), override.get("InstanceType")
                              or version["LaunchTemplateData"].get("InstanceType", "m1.small"), lt_spec,
                              version["LaunchTemplateData"]))
        with self.lock:
            shares = self._place([(p[0], p[1]) for p in pools], count)
        instances, errors = [], []
        for (subnet, itype, lt_spec, data), n in zip(pools, shares):
            overrides = {**({"SubnetId": subnet} if subnet else {}), "InstanceType": itype}
            entry = {"LaunchTemplateAndOverrides": {"LaunchTemplateSpecification": lt_spec, "Overrides": overrides},
                     "Lifecycle": "spot" if spot else "on-demand"}
            if sum(shares) < count:             # placement stopped: every pool is out of room
                errors.append({**entry, "ErrorCode": INSUFFICIENT[0], "ErrorMessage": INSUFFICIENT[1]})
            if not n:
                continue
            ids = self._run(client, data, subnet, itype, n, spot, instance_tags)
            instances.append({**entry, "InstanceIds": ids, "InstanceType": itype})
        result = {"FleetId": f"fleet-{uuid.uuid4()}", "Instances": instances, "Errors": errors}
        shape = self.model.operation_model("CreateFleet").output_shape
        xml = (f'<?xml version="1.0" encoding="UTF-8"?><CreateFleetResponse xmlns="http://ec2.amazonaws.com/doc/'
               f'2016-11-15/"><requestId>{uuid.uuid4()}</requestId>{to_xml(shape, result)}</CreateFleetResponse>')
        return 200, [("Content-Type", "text/xml")], xml.encode()

    @staticmethod
    def _run(client, data: dict, subnet: str, itype: str, n: int, spot: bool, instance_tags: list[dict]) -> list[str]:
        """One pool's share through moto's own RunInstances, with the template's data as EC2 Fleet applies it."""
        params = {k: v for k, v in data.items() if k not in ("TagSpecifications", "UserData", "InstanceType")}
        if data.get("UserData"):
            params["UserData"] = base64.b64decode(data["UserData"]).decode()
        tags = [t for t in data.get("TagSpecifications", []) if t["ResourceType"] != "instance"]
        if instance_tags:
            tags.append({"ResourceType": "instance", "Tags": instance_tags})
        if spot:
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        if subnet:
            params["SubnetId"] = subnet
        reservation = client.run_instances(**params, InstanceType=itype, MinCount=n, MaxCount=n,
                                           **({"TagSpecifications": tags} if tags else {}))
        return [i["InstanceId"] for i in reservation["Instances"]]
