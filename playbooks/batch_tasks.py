"""Run workloads on AWS Batch: a spot compute environment and a queue, one container job per shard.

`invoke batch.setup` creates them (idempotent), `invoke batch.submit --workload resize --shards 256
[--then edges]` submits, `invoke batch.status` counts jobs by state and lists failures, `invoke batch.down`
removes what setup created.  Inputs and outputs live in S3 (s3://bucket/prefix); the image is batch.image.
"""
from __future__ import annotations

from invoke import task

from playbooks.engines import batch as engine
from playbooks.settings import setting
from playbooks.settings.errors import user_errors
from playbooks.settings.flags import long_only


@task(help={
    "image": "container image of the jobs (default: batch.image); build it from docker/Dockerfile",
    "bucket": "the bucket the jobs may read and write (default: batch.bucket, else the bucket of batch.src)",
})
@user_errors()
def setup(c, image="", bucket=""):
    """Create the spot compute environment, the job queue and the job definition (idempotent)."""
    engine.setup(c, image=image, bucket=bucket)


@task(help={
    "workload": "which workload each job runs (a script in workloads/): resize, edges, features",
    "src": "inputs, s3://bucket/prefix (default: batch.src)",
    "dst": "outputs, s3://bucket/prefix (default: batch.dst)",
    "shards": "jobs per stage, one per hash-prefix shard of the items (default: batch.shards)",
    "then": "a second workload run per shard on the first one's outputs, each job after its own shard only",
    "then_dst": "outputs of the second stage (default: <dst>-<then>)",
    "args": "extra workload arguments as ONE quoted string, e.g. --args '--size 64'",
    "then_args": "extra arguments of the second workload, one quoted string",
})
@user_errors()
def submit(c, workload="", src="", dst="", shards=0, then="", then_dst="", args="", then_args=""):
    """Submit one job per shard (and one dependent job per shard with --then)."""
    engine.submit(c, setting(c, "job.workload", workload), src=src, dst=dst, shards=shards, then=then,
                  then_dst=then_dst, args=args, then_args=then_args)


long_only(submit)  # no short flags: -h for --shards would read as --help


@task(help={"run_id": "only this run (default: every run in the queue, newest first)"})
@user_errors()
def status(c, run_id=""):
    """Count the queue's jobs by state, per run, and list the failed ones with their reason."""
    engine.status(c, run_id=run_id)


@task
@user_errors()
def down(c):
    """Remove the job queue, the compute environment, the job definitions and the roles setup made."""
    engine.down(c)
