"""The AWS Batch engine: a SPOT compute environment, a job queue, a job definition; one job per shard.

``setup`` creates (idempotently, found by name) what a run needs: the IAM roles Batch asks for (service role,
instance role + instance profile, job role that may read and write the bucket), a MANAGED SPOT compute
environment, a job queue on it and a job definition whose image is ``batch.image`` (built from
``docker/Dockerfile``).  ``submit`` sends one job per hash-prefix shard, each running
``python workloads/<w>.py --src s3://... --dst s3://... --shard k/N --threads T`` (the workload itself, on
object-store paths through ``workloads/fw_objstore.py``), and with ``then`` one second-stage job per shard that
depends only on the same shard of the first stage (AWS allows at most 20 ``dependsOn`` per job; this uses 1).
``status`` summarises the queue's jobs by state, per run, and lists the failures; ``down`` removes everything
``setup`` created.  boto3 honours ``AWS_ENDPOINT_URL`` (a moto server in the tests).
"""
from __future__ import annotations

import json
import math
import secrets
import shlex
import time
from concurrent.futures import ThreadPoolExecutor

from invoke.exceptions import Exit
from rich.console import Console
from rich.table import Table
from rich.text import Text

from playbooks.measure import profiles
from playbooks.runs import state as runstate
from playbooks.settings.engines import ENGINE_DEFAULTS

console = Console()
err = Console(stderr=True)

BATCH_DEFAULTS = ENGINE_DEFAULTS["batch"]
STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
MAX_DEPENDS_ON = 20
WARN_SHARE = 0.10
MANAGED = "arn:aws:iam::aws:policy/service-role/"


def setting(c, key: str):
    sub = c.config.get("batch") or {}
    value = sub.get(key, None) if hasattr(sub, "get") else None
    return BATCH_DEFAULTS[key] if value is None else value


def region(c) -> str:
    aws = c.config.get("aws") or {}
    return str(setting(c, "region") or (aws.get("region") if hasattr(aws, "get") else "") or "us-east-1")


def clients(c):
    import boto3
    r = region(c)
    return boto3.client("batch", region_name=r), boto3.client("iam", region_name=r), boto3.client("ec2", region_name=r)


def names(c) -> dict:
    base = str(setting(c, "name"))
    return {"ce": f"{base}-spot", "queue": f"{base}-queue", "jobdef": f"{base}-job",
            "service_role": f"{base}-batch-service", "instance_role": f"{base}-batch-instance",
            "job_role": f"{base}-batch-job"}


def csv(value) -> list[str]:
    return [v.strip() for v in str(value or "").split(",") if v.strip()]


def split_s3(url: str) -> tuple[str, str]:
    if not url.startswith("s3://") or len(url) <= 5:
        raise Exit(f"{url!r} is not an s3:// URL: pass --src/--dst like s3://bucket/prefix")
    bucket, _, key = url[5:].partition("/")
    return bucket, key.strip("/")


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
    tag = str(setting(c, "name"))
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


# ---------------------------------------------------------------------------------------------------- network

def network(c, ec2) -> tuple[list[str], list[str]]:
    subnets, groups = csv(setting(c, "subnets")), csv(setting(c, "security_groups"))
    if not subnets or not groups:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise Exit("no default VPC in this region: set batch.subnets and batch.security_groups")
        vpc = vpcs[0]["VpcId"]
        if not subnets:
            subnets = [s["SubnetId"] for s in ec2.describe_subnets(
                Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]]
        if not groups:
            groups = [g["GroupId"] for g in ec2.describe_security_groups(
                Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}])[
                "SecurityGroups"]]
    if not subnets or not groups:
        raise Exit("no subnet or security group found: set batch.subnets and batch.security_groups")
    return subnets, groups


# ---------------------------------------------------------------------------------------------------- waiting

def _wait(what: str, probe, done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        state = probe()
        if done(state):
            return
        if time.monotonic() > deadline:
            raise Exit(f"{what} is still {state} after {timeout:.0f} s: check the AWS Batch console and retry")
        time.sleep(delay)
        delay = min(5.0, delay * 2)


def _ce(batch, name):
    found = batch.describe_compute_environments(computeEnvironments=[name])["computeEnvironments"]
    return found[0] if found and found[0].get("status") != "DELETED" else None


def _queue(batch, name):
    found = batch.describe_job_queues(jobQueues=[name])["jobQueues"]
    return found[0] if found and found[0].get("status") != "DELETED" else None


def _jobdefs(batch, name) -> list[dict]:
    pages = batch.get_paginator("describe_job_definitions").paginate(jobDefinitionName=name, status="ACTIVE")
    return [d for page in pages for d in page["jobDefinitions"]]


# ---------------------------------------------------------------------------------------------------- setup/down

def setup(c, image: str = "", bucket: str = "") -> dict:
    """Create what is missing; report what existed.  Returns {resource: "created" | "exists"}."""
    image = image or str(setting(c, "image"))
    if not image:
        raise Exit("no container image: build and push docker/Dockerfile (docker/README.md), then set batch.image "
                   "(INVOKE_BATCH_IMAGE=<account>.dkr.ecr.<region>.amazonaws.com/fleetbook:1) or pass --image")
    bucket = bucket or str(setting(c, "bucket")) or (split_s3(str(setting(c, "src")))[0] if setting(c, "src") else "")
    batch, iam, ec2 = clients(c)
    n = names(c)
    timeout = float(setting(c, "wait_timeout"))
    report = {}
    roles = ensure_roles(c, iam, bucket)
    report["roles"] = "ready"

    if _ce(batch, n["ce"]) is None:
        subnets, groups = network(c, ec2)
        batch.create_compute_environment(
            computeEnvironmentName=n["ce"], type="MANAGED", state="ENABLED", serviceRole=roles["service"],
            computeResources={
                "type": "SPOT", "allocationStrategy": "SPOT_PRICE_CAPACITY_OPTIMIZED",
                "bidPercentage": int(setting(c, "bid_percentage")), "minvCpus": 0,
                "maxvCpus": int(setting(c, "max_vcpus")), "desiredvCpus": 0,
                "instanceTypes": csv(setting(c, "instance_types")) or ["optimal"], "subnets": subnets,
                "securityGroupIds": groups, "instanceRole": roles["instance_profile"],
                "tags": {"fleetbook": str(setting(c, "name"))}},
            tags={"fleetbook": str(setting(c, "name"))})
        report["compute_environment"] = "created"
    else:
        report["compute_environment"] = "exists"
    _wait(f"compute environment {n['ce']}", lambda: (_ce(batch, n["ce"]) or {}).get("status"),
          lambda s: s == "VALID", timeout)

    if _queue(batch, n["queue"]) is None:
        batch.create_job_queue(jobQueueName=n["queue"], state="ENABLED", priority=1,
                               computeEnvironmentOrder=[{"order": 1, "computeEnvironment": n["ce"]}],
                               tags={"fleetbook": str(setting(c, "name"))})
        report["job_queue"] = "created"
    else:
        report["job_queue"] = "exists"
    _wait(f"job queue {n['queue']}", lambda: (_queue(batch, n["queue"]) or {}).get("status"),
          lambda s: s == "VALID", timeout)

    props = {"image": image, "command": ["python", "workloads/resize.py", "--help"],
             "jobRoleArn": roles["job"],
             "resourceRequirements": [{"type": "VCPU", "value": str(setting(c, "vcpus"))},
                                      {"type": "MEMORY", "value": str(setting(c, "memory_mib"))}]}
    current = [d for d in _jobdefs(batch, n["jobdef"])
               if d.get("containerProperties", {}).get("image") == image
               and d.get("containerProperties", {}).get("jobRoleArn") == roles["job"]]
    if current:
        report["job_definition"] = "exists"
    else:  # a new image is a new revision; older revisions stay until down
        batch.register_job_definition(
            jobDefinitionName=n["jobdef"], type="container", containerProperties=props,
            retryStrategy={"attempts": int(setting(c, "attempts"))},
            timeout={"attemptDurationSeconds": int(setting(c, "job_timeout_s"))},
            tags={"fleetbook": str(setting(c, "name"))})
        report["job_definition"] = "created"
    for what, state in report.items():
        console.print(f"batch: {what.replace('_', ' ')}: {state}")
    return report


def down(c) -> dict:
    """Remove the queue, the compute environment, the job definitions and the roles; "already gone" is fine."""
    batch, iam, _ec2 = clients(c)
    n = names(c)
    timeout = float(setting(c, "wait_timeout"))
    removed = {}
    q = _queue(batch, n["queue"])
    if q:
        for state in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"):
            for job in list_jobs(batch, n["queue"], state):
                batch.terminate_job(jobId=job["jobId"], reason="fleetbook batch.down")
        if q.get("state") != "DISABLED":
            batch.update_job_queue(jobQueue=n["queue"], state="DISABLED")
        _wait(f"job queue {n['queue']}", lambda: (_queue(batch, n["queue"]) or {}).get("status"),
              lambda s: s in (None, "VALID", "INVALID"), timeout)
        batch.delete_job_queue(jobQueue=n["queue"])
        _wait(f"job queue {n['queue']}", lambda: _queue(batch, n["queue"]) and "DELETING", lambda s: not s, timeout)
        removed["job_queue"] = 1
    ce = _ce(batch, n["ce"])
    if ce:
        if ce.get("state") != "DISABLED":
            batch.update_compute_environment(computeEnvironment=n["ce"], state="DISABLED")
        _wait(f"compute environment {n['ce']}", lambda: (_ce(batch, n["ce"]) or {}).get("status"),
              lambda s: s in (None, "VALID", "INVALID"), timeout)
        batch.delete_compute_environment(computeEnvironment=n["ce"])
        _wait(f"compute environment {n['ce']}", lambda: _ce(batch, n["ce"]) and "DELETING", lambda s: not s,
              timeout)
        removed["compute_environment"] = 1
    defs = _jobdefs(batch, n["jobdef"])
    for d in defs:
        batch.deregister_job_definition(jobDefinition=d["jobDefinitionArn"])
    removed["job_definitions"] = len(defs)
    removed["iam"] = remove_roles(c, iam)
    if any(removed.values()):
        console.print("batch: removed " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in removed.items() if v))
    else:
        console.print("batch: nothing to remove")
    return removed


# ---------------------------------------------------------------------------------------------------- jobs

def job_command(workload: str, src: str, dst: str, shard: int, shards: int, threads: int, args: str) -> list[str]:
    """The container command of one shard job (what the image runs from its /app working directory)."""
    return ["python", f"workloads/{workload}.py", "--src", src, "--dst", dst,
            "--shard", f"{shard}/{shards}", "--threads", str(threads), *shlex.split(args)]


def count_items(c, workload: str, src: str, args: str) -> int | None:
    """One listing of the source prefix (the head needs fsspec/s3fs for it); None when it cannot list."""
    fw = runstate.fleetwork()
    try:
        import fw_objstore  # workloads/ is on the path once fleetwork is imported
        wl = fw.load(workload)
        opts = wl.parse_args(["--src", src, "--dst", src + "-probe", *shlex.split(args)])
        return len(fw_objstore.list_items(wl, src, opts))
    except Exception:  # noqa: BLE001 - the plan then says "unknown"
        return None


def item_seconds(c, workload: str) -> tuple[float, str]:
    """batch.item_seconds, else the measured time per item of the workload (``invoke bench --node`` on an
    aws.instance_type node, else this machine's profile): with a measured figure the overhead warning is on by
    default.  (0.0, "") when nothing is known."""
    explicit = float(setting(c, "item_seconds"))
    if explicit:
        return explicit, ""
    aws = c.config.get("aws") or {}
    measured, source = profiles.item_seconds(c, "aws", str(aws.get("instance_type", "") if hasattr(aws, "get") else ""),
                                             workload)
    return (measured, source) if measured else (0.0, "")


def plan_line(items: int | None, shards: int, start_s: float, item_s: float, threads: int) -> tuple[str, float | None]:
    per_job = None if items is None else math.ceil(items / shards)
    work = None if per_job is None or not item_s else per_job * item_s / max(1, threads)
    share = None if work is None else start_s / (start_s + work)
    line = (f"batch: {shards} job(s) per stage, "
            f"{'? items' if per_job is None else f'~{per_job} item(s)'} per job ({items if items is not None else '?'}"
            f" in all); per-job start {start_s:.0f} s; expected overhead share "
            f"{'unknown (set batch.item_seconds)' if share is None else f'{share:.1%}'}")
    return line, share


def submit(c, workload: str, src: str = "", dst: str = "", shards: int = 0, then: str = "", then_dst: str = "",
           args: str = "", then_args: str = "", run_id: str = "") -> dict:
    src = src or str(setting(c, "src"))
    dst = dst or str(setting(c, "dst"))
    for url, flag in ((src, "--src"), (dst, "--dst")):
        if not url:
            raise Exit(f"say where: {flag} s3://bucket/prefix (or batch.{flag[2:]})")
        split_s3(url)
    fw = runstate.fleetwork()
    for w in filter(None, (workload, then)):
        if w not in fw.available():
            raise Exit(f"unknown workload {w!r}: choose one of {', '.join(fw.available())}")
    shards = int(shards or setting(c, "shards"))
    if shards < 1:
        raise Exit("--shards must be >= 1")
    then_dst = then_dst or (f"{dst.rstrip('/')}-{then}" if then else "")
    threads = int(setting(c, "threads"))
    batch, _iam, _ec2 = clients(c)
    n = names(c)
    q = _queue(batch, n["queue"])
    if q is None or not _jobdefs(batch, n["jobdef"]):
        raise Exit("no job queue or job definition: run `invoke batch.setup` first")
    items = count_items(c, workload, src, args)
    item_s, measured = item_seconds(c, workload)
    line, share = plan_line(items, shards, float(setting(c, "job_start_s")), item_s, threads)
    console.print(line + (f"; then {then}: {shards} dependent job(s), one per shard" if then else "")
                  + (f"; per item {item_s * 1e3:.2f} ms, {measured}" if measured else ""))
    if share is not None and share > WARN_SHARE:
        err.print(f"[yellow]warning: job start would be {share:.0%} of the work (> {WARN_SHARE:.0%}): "
                  f"use fewer shards (--shards {max(1, shards // 4)})[/]")
    run_id = run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"

    def one(k: int) -> dict:
        first_cmd = job_command(workload, src, dst, k, shards, threads, args)
        first = batch.submit_job(jobName=f"fb-{run_id}-{workload}-{k}", jobQueue=n["queue"],
                                 jobDefinition=n["jobdef"], containerOverrides={"command": first_cmd},
                                 tags={"fleetbook-run": run_id, "fleetbook-stage": "1"})
        entry = {"shard": k, "job_id": first["jobId"], "command": first_cmd}
        if then:
            deps = [{"jobId": first["jobId"]}]  # the same shard of the first stage only (AWS: <= 20)
            second_cmd = job_command(then, dst, then_dst, k, shards, threads, then_args)
            second = batch.submit_job(jobName=f"fb-{run_id}-{then}-{k}", jobQueue=n["queue"],
                                      jobDefinition=n["jobdef"], containerOverrides={"command": second_cmd},
                                      dependsOn=deps, tags={"fleetbook-run": run_id, "fleetbook-stage": "2"})
            entry.update(then_job_id=second["jobId"], then_command=second_cmd)
        return entry

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="batch-submit") as pool:
        jobs = list(pool.map(one, range(shards)))
    console.print(f"batch: run {run_id}: submitted {len(jobs) * (2 if then else 1)} job(s) to {n['queue']}; "
                  f"`invoke batch.status --run-id {run_id}`")
    return {"run_id": run_id, "jobs": jobs, "items": items, "shards": shards}


def list_jobs(batch, queue: str, state: str) -> list[dict]:
    pages = batch.get_paginator("list_jobs").paginate(jobQueue=queue, jobStatus=state)
    return [j for page in pages for j in page["jobSummaryList"]]


def run_of(job_name: str) -> str:
    """``fb-<date>-<time>-<hex>-<workload>-<k>`` -> ``<date>-<time>-<hex>``."""
    parts = job_name.split("-")
    return "-".join(parts[1:4]) if len(parts) >= 6 and parts[0] == "fb" else "?"


def summarise(jobs_by_state: dict[str, list[dict]], run_id: str = "") -> dict:
    """{run: {state: count}} and the failures (name, reason), from list_jobs pages."""
    runs: dict[str, dict[str, int]] = {}
    failures = []
    for state, jobs in jobs_by_state.items():
        for job in jobs:
            rid = run_of(job.get("jobName", ""))
            if run_id and rid != run_id:
                continue
            runs.setdefault(rid, {s: 0 for s in STATES})[state] += 1
            if state == "FAILED":
                failures.append({"run": rid, "job": job.get("jobName", ""), "job_id": job.get("jobId", ""),
                                 "reason": job.get("statusReason", "")
                                 or (job.get("container") or {}).get("reason", "")})
    return {"runs": runs, "failures": failures}


def status(c, run_id: str = "") -> dict:
    batch, _iam, _ec2 = clients(c)
    n = names(c)
    if _queue(batch, n["queue"]) is None:
        raise Exit("no job queue: run `invoke batch.setup` first")
    summary = summarise({s: list_jobs(batch, n["queue"], s) for s in STATES}, run_id)
    if not summary["runs"]:
        console.print(f"batch: no jobs in {n['queue']}" + (f" for run {run_id}" if run_id else ""))
        return summary
    table = Table(title=f"jobs in {n['queue']}", title_justify="left")
    table.add_column("run")
    for s in STATES:
        table.add_column(s.lower(), justify="right")
    for rid in sorted(summary["runs"], reverse=True):
        table.add_row(rid, *(str(summary["runs"][rid][s]) for s in STATES))
    console.print(table)
    if summary["failures"]:
        ft = Table(title=f"{len(summary['failures'])} failed job(s)", title_justify="left")
        for col in ("run", "job", "reason"):
            ft.add_column(col)
        for f in summary["failures"][:50]:
            ft.add_row(*(Text(str(x)) for x in (f["run"], f["job"], f["reason"][:100])))  # data, not markup
        console.print(ft)
    return summary
