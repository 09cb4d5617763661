"""The AWS Batch calls the engine makes: clients, the names of what ``setup`` creates, finding a compute
environment / queue / job definition by name, listing jobs, waiting for a state.  boto3 honours
``AWS_ENDPOINT_URL`` (a moto server in the tests)."""
from __future__ import annotations

import time

from playbooks.engines.errors import EngineError
from playbooks.settings import setting

STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")


def region(c) -> str:
    return setting(c, "batch.region") or setting(c, "aws.region") or "us-east-1"


def clients(c):
    import boto3
    r = region(c)
    return boto3.client("batch", region_name=r), boto3.client("iam", region_name=r), boto3.client("ec2", region_name=r)


def names(c) -> dict:
    base = setting(c, "batch.name")
    return {"ce": f"{base}-spot", "queue": f"{base}-queue", "jobdef": f"{base}-job",
            "service_role": f"{base}-batch-service", "instance_role": f"{base}-batch-instance",
            "job_role": f"{base}-batch-job"}


def csv(value) -> list[str]:
    return [v.strip() for v in str(value or "").split(",") if v.strip()]


def split_s3(url: str) -> tuple[str, str]:
    if not url.startswith("s3://") or len(url) <= 5:
        raise EngineError(f"{url!r} is not an s3:// URL: pass --src/--dst like s3://bucket/prefix")
    bucket, _, key = url[5:].partition("/")
    return bucket, key.strip("/")


def wait(what: str, probe, done, timeout: float) -> None:
    """Poll ``probe()`` (backing off up to 5 s) until ``done(state)``, else a one-line error after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        state = probe()
        if done(state):
            return
        if time.monotonic() > deadline:
            raise EngineError(f"{what} is still {state} after {timeout:.0f} s: check the AWS Batch console and retry")
        time.sleep(delay)
        delay = min(5.0, delay * 2)


def compute_environment(batch, name):
    found = batch.describe_compute_environments(computeEnvironments=[name])["computeEnvironments"]
    return found[0] if found and found[0].get("status") != "DELETED" else None


def queue(batch, name):
    found = batch.describe_job_queues(jobQueues=[name])["jobQueues"]
    return found[0] if found and found[0].get("status") != "DELETED" else None


def job_definitions(batch, name) -> list[dict]:
    pages = batch.get_paginator("describe_job_definitions").paginate(jobDefinitionName=name, status="ACTIVE")
    return [d for page in pages for d in page["jobDefinitions"]]


def list_jobs(batch, queue_name: str, state: str) -> list[dict]:
    pages = batch.get_paginator("list_jobs").paginate(jobQueue=queue_name, jobStatus=state)
    return [j for page in pages for j in page["jobSummaryList"]]
