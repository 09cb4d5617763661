"""What a Batch run needs, created by ``setup`` (idempotently, found by name) and removed by ``down``: the IAM
roles Batch asks for (service role, instance role + instance profile, job role that may read and write the
bucket), a MANAGED SPOT compute environment, a job queue on it and a job definition whose image is
``batch.image`` (built from ``docker/Dockerfile``)."""
from __future__ import annotations

import json

from rich.console import Console

from playbooks.engines.batch.aws import (clients, compute_environment, csv, job_definitions, list_jobs,
                                         names, queue, split_s3, wait)
from playbooks.engines.errors import EngineError
from playbooks.settings import setting

console = Console()

MANAGED = "arn:aws:iam::aws:policy/service-role/"

# ---------------------------------------------------------------------------------------------------- IAM

TRUST = {
    "service": "batch.amazonaws.com",
    "instance": "ec2.amazonaws.com",
    "job": "ecs-tasks.amazonaws.com",
}


def _trust(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


def _role(iam, name: str, service: str, tag: str) -> str:
    try:
        return iam.get_role(RoleName=name)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        return iam.create_role(RoleName=name, AssumeRolePolicyDocument=_trust(service),
                               Tags=[{"Key": "fleetbook", "Value": tag}])["Role"]["Arn"]


def _attach(iam, role: str, policy_arn: str) -> None:
    try:
        iam.attach_role_policy(RoleName=role, PolicyArn=policy_arn)
    except iam.exceptions.NoSuchEntityException:
        pass  # an emulator without AWS-managed policies; real IAM always has them


def ensure_roles(c, iam, bucket: str) -> dict:
    n = names(c)
    tag = setting(c, "batch.name")
    service = _role(iam, n["service_role"], TRUST["service"], tag)
    _attach(iam, n["service_role"], MANAGED + "AWSBatchServiceRole")
    _role(iam, n["instance_role"], TRUST["instance"], tag)
    _attach(iam, n["instance_role"], MANAGED + "AmazonEC2ContainerServiceforEC2Role")
    try:
        profile = iam.get_instance_profile(InstanceProfileName=n["instance_role"])["InstanceProfile"]
    except iam.exceptions.NoSuchEntityException:
        profile = iam.create_instance_profile(InstanceProfileName=n["instance_role"])["InstanceProfile"]
    if not any(r["RoleName"] == n["instance_role"] for r in profile.get("Roles", [])):
        iam.add_role_to_instance_profile(InstanceProfileName=n["instance_role"], RoleName=n["instance_role"])
    job = _role(iam, n["job_role"], TRUST["job"], tag)
    if bucket:
        iam.put_role_policy(RoleName=n["job_role"], PolicyName="fleetbook-bucket", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{bucket}"},
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                 "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    return {"service": service, "instance_profile": profile["Arn"], "job": job}


def remove_roles(c, iam) -> int:
    n = names(c)
    removed = 0
    try:
        profile = iam.get_instance_profile(InstanceProfileName=n["instance_role"])["InstanceProfile"]
        for r in profile.get("Roles", []):
            iam.remove_role_from_instance_profile(InstanceProfileName=n["instance_role"], RoleName=r["RoleName"])
        iam.delete_instance_profile(InstanceProfileName=n["instance_role"])
        removed += 1
    except iam.exceptions.NoSuchEntityException:
        pass
    for role in (n["service_role"], n["instance_role"], n["job_role"]):
        try:
            for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
                iam.detach_role_policy(RoleName=role, PolicyArn=p["PolicyArn"])
            for p in iam.list_role_policies(RoleName=role)["PolicyNames"]:
                iam.delete_role_policy(RoleName=role, PolicyName=p)
            iam.delete_role(RoleName=role)
            removed += 1
        except iam.exceptions.NoSuchEntityException:
            pass
    return removed


def network(c, ec2) -> tuple[list[str], list[str]]:
    subnets, groups = csv(setting(c, "batch.subnets")), csv(setting(c, "batch.security_groups"))
    if not subnets or not groups:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise EngineError("no default VPC in this region: set batch.subnets and batch.security_groups")
        vpc = vpcs[0]["VpcId"]
        if not subnets:
            subnets = [s["SubnetId"] for s in ec2.describe_subnets(
                Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]]
        if not groups:
            groups = [g["GroupId"] for g in ec2.describe_security_groups(
                Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}])[
                "SecurityGroups"]]
    if not subnets or not groups:
        raise EngineError("no subnet or security group found: set batch.subnets and batch.security_groups")
    return subnets, groups



def _status(find, batch, name):
    """A probe for ``wait``: the status of the resource ``find(batch, name)`` finds (None once it is gone)."""
    return lambda: (find(batch, name) or {}).get("status")


def _ensure_compute_environment(c, batch, ec2, n: dict, roles: dict, timeout: float) -> str:
    state = "exists"
    if compute_environment(batch, n["ce"]) is None:
        subnets, groups = network(c, ec2)
        tag = setting(c, "batch.name")
        batch.create_compute_environment(
            computeEnvironmentName=n["ce"], type="MANAGED", state="ENABLED", serviceRole=roles["service"],
            computeResources={
                "type": "SPOT", "allocationStrategy": "SPOT_PRICE_CAPACITY_OPTIMIZED",
                "bidPercentage": setting(c, "batch.bid_percentage"), "minvCpus": 0,
                "maxvCpus": setting(c, "batch.max_vcpus"), "desiredvCpus": 0,
                "instanceTypes": csv(setting(c, "batch.instance_types")) or ["optimal"], "subnets": subnets,
                "securityGroupIds": groups, "instanceRole": roles["instance_profile"],
                "tags": {"fleetbook": tag}},
            tags={"fleetbook": tag})
        state = "created"
    wait(f"compute environment {n['ce']}", _status(compute_environment, batch, n["ce"]), lambda s: s == "VALID",
         timeout)
    return state


def _ensure_queue(c, batch, n: dict, timeout: float) -> str:
    state = "exists"
    if queue(batch, n["queue"]) is None:
        batch.create_job_queue(jobQueueName=n["queue"], state="ENABLED", priority=1,
                               computeEnvironmentOrder=[{"order": 1, "computeEnvironment": n["ce"]}],
                               tags={"fleetbook": setting(c, "batch.name")})
        state = "created"
    wait(f"job queue {n['queue']}", _status(queue, batch, n["queue"]), lambda s: s == "VALID", timeout)
    return state


def _ensure_job_definition(c, batch, n: dict, image: str, job_role: str) -> str:
    current = [d for d in job_definitions(batch, n["jobdef"])
               if d.get("containerProperties", {}).get("image") == image
               and d.get("containerProperties", {}).get("jobRoleArn") == job_role]
    if current:
        return "exists"
    props = {"image": image, "command": ["python", "workloads/resize.py", "--help"], "jobRoleArn": job_role,
             "resourceRequirements": [{"type": "VCPU", "value": str(setting(c, "batch.vcpus"))},
                                      {"type": "MEMORY", "value": str(setting(c, "batch.memory_mib"))}]}
    batch.register_job_definition(  # a new image is a new revision; older revisions stay until down
        jobDefinitionName=n["jobdef"], type="container", containerProperties=props,
        retryStrategy={"attempts": setting(c, "batch.attempts")},
        timeout={"attemptDurationSeconds": setting(c, "batch.job_timeout_s")},
        tags={"fleetbook": setting(c, "batch.name")})
    return "created"


def setup(c, image: str = "", bucket: str = "") -> dict:
    """Create what is missing; report what existed.  Returns {resource: "created" | "exists"}."""
    image = image or setting(c, "batch.image")
    if not image:
        raise EngineError("no container image: build and push docker/Dockerfile (docker/README.md), then set "
                          "batch.image (INVOKE_BATCH_IMAGE=<account>.dkr.ecr.<region>.amazonaws.com/fleetbook:1) "
                          "or pass --image")
    src = setting(c, "batch.src")
    bucket = bucket or setting(c, "batch.bucket") or (split_s3(src)[0] if src else "")
    batch, iam, ec2 = clients(c)
    n = names(c)
    timeout = setting(c, "batch.wait_timeout")
    roles = ensure_roles(c, iam, bucket)
    report = {"roles": "ready",
              "compute_environment": _ensure_compute_environment(c, batch, ec2, n, roles, timeout),
              "job_queue": _ensure_queue(c, batch, n, timeout),
              "job_definition": _ensure_job_definition(c, batch, n, image, roles["job"])}
    for what, state in report.items():
        console.print(f"batch: {what.replace('_', ' ')}: {state}")
    return report


def _remove(what: str, find, batch, name: str, disable, delete, timeout: float) -> int:
    """Disable, wait until it settles, delete, wait until it is gone; 0 when there was nothing."""
    found = find(batch, name)
    if not found:
        return 0
    if found.get("state") != "DISABLED":
        disable()
    wait(f"{what} {name}", _status(find, batch, name), lambda s: s in (None, "VALID", "INVALID"), timeout)
    delete()
    wait(f"{what} {name}", lambda: find(batch, name) and "DELETING", lambda s: not s, timeout)
    return 1


def down(c) -> dict:
    """Remove the queue, the compute environment, the job definitions and the roles; "already gone" is fine."""
    batch, iam, _ec2 = clients(c)
    n = names(c)
    timeout = setting(c, "batch.wait_timeout")
    removed = {}
    if queue(batch, n["queue"]):
        for state in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"):
            for job in list_jobs(batch, n["queue"], state):
                batch.terminate_job(jobId=job["jobId"], reason="fleetbook batch.down")
        removed["job_queue"] = _remove(
            "job queue", queue, batch, n["queue"], timeout=timeout,
            disable=lambda: batch.update_job_queue(jobQueue=n["queue"], state="DISABLED"),
            delete=lambda: batch.delete_job_queue(jobQueue=n["queue"]))
    if compute_environment(batch, n["ce"]):
        removed["compute_environment"] = _remove(
            "compute environment", compute_environment, batch, n["ce"], timeout=timeout,
            disable=lambda: batch.update_compute_environment(computeEnvironment=n["ce"], state="DISABLED"),
            delete=lambda: batch.delete_compute_environment(computeEnvironment=n["ce"]))
    defs = job_definitions(batch, n["jobdef"])
    for d in defs:
        batch.deregister_job_definition(jobDefinition=d["jobDefinitionArn"])
    removed["job_definitions"] = len(defs)
    removed["iam"] = remove_roles(c, iam)
    if any(removed.values()):
        console.print("batch: removed " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in removed.items() if v))
    else:
        console.print("batch: nothing to remove")
    return removed
