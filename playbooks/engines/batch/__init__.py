"""The AWS Batch engine: a SPOT compute environment, a job queue, a job definition; one job per shard.

``resources``: ``setup`` / ``down`` (the IAM roles, the compute environment, the queue, the job definition);
``jobs``: ``submit`` (one job per shard, a dependent second stage with ``then``) and ``status``;
``aws``: the clients, the names and the Batch calls both use.  boto3 honours ``AWS_ENDPOINT_URL`` (moto in tests).
"""
from __future__ import annotations

from playbooks.engines.batch.aws import STATES, clients, csv, list_jobs, names, region, split_s3
from playbooks.engines.batch.jobs import (MAX_DEPENDS_ON, count_items, item_seconds, job_command, plan_line, run_of,
                                          status, submit, summarise)
from playbooks.engines.batch.resources import down, ensure_roles, network, remove_roles, setup
from playbooks.engines.plan import WARN_SHARE
from playbooks.settings.engines import ENGINE_DEFAULTS

BATCH_DEFAULTS = ENGINE_DEFAULTS["batch"]

__all__ = ["BATCH_DEFAULTS", "MAX_DEPENDS_ON", "STATES", "WARN_SHARE", "clients", "count_items", "csv", "down",
           "ensure_roles", "item_seconds", "job_command", "list_jobs", "names", "network", "plan_line", "region",
           "remove_roles", "run_of", "setup", "split_s3", "status", "submit", "summarise"]
