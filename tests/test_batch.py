"""The AWS Batch engine against a moto server on 127.0.0.1 (Batch without Docker, S3 on the same server).

Fake credentials and endpoints only (``aws_env`` from cloud_fixtures: ~/.aws is never read).  moto marks
every job as succeeded without running it, so one shard job's exact command is also run here, locally,
against the moto S3, and its outputs are checked.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request

import boto3
import pytest
from PIL import Image

from tests.support.cloud import make_context
from playbooks import batch_tasks
from playbooks.runs import state as runstate
from playbooks.settings.defaults import REPO
from playbooks.engines import batch as engine
from playbooks.engines.errors import EngineError
from playbooks.runs.samples import make_samples

BUCKET = "fb-batch-test"
IMAGES = 24
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/fleetbook:test"
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def batch_ctx(aws_env, tmp_path):
    req = urllib.request.Request(aws_env + "/moto-api/config", method="POST",
                                 data=json.dumps({"batch": {"use_docker": False}}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).close()
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    make_samples(tmp_path / "src", IMAGES, size=(320, 240))
    for p in sorted((tmp_path / "src").rglob("*.jpg")):
        s3.upload_file(str(p), BUCKET, "src/" + p.relative_to(tmp_path / "src").as_posix())
    return make_context({
        "fleet": {"state_dir": str(tmp_path / "state")},
        "batch": dict(engine.BATCH_DEFAULTS, image=IMAGE, src=f"s3://{BUCKET}/src", dst=f"s3://{BUCKET}/out",
                      wait_timeout=20.0),
    })


def batch_client():
    return boto3.client("batch", region_name="us-east-1")


def describe(ids):
    out = []
    for k in range(0, len(ids), 100):
        out += batch_client().describe_jobs(jobs=ids[k:k + 100])["jobs"]
    return {j["jobId"]: j for j in out}


def s3_keys(prefix):
    pages = boto3.client("s3", region_name="us-east-1").get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_setup_is_idempotent(batch_ctx):
    first = engine.setup(batch_ctx)
    assert first["compute_environment"] == first["job_queue"] == first["job_definition"] == "created"
    again = engine.setup(batch_ctx)
    assert again["compute_environment"] == again["job_queue"] == again["job_definition"] == "exists"
    b = batch_client()
    (ce,) = b.describe_compute_environments()["computeEnvironments"]
    assert ce["computeEnvironmentName"] == "fleetbook-spot" and ce["computeResources"]["type"] == "SPOT"
    assert ce["type"] == "MANAGED" and ce["state"] == "ENABLED"
    (queue,) = b.describe_job_queues()["jobQueues"]
    assert queue["computeEnvironmentOrder"][0]["computeEnvironment"].endswith("compute-environment/fleetbook-spot") or \
        queue["computeEnvironmentOrder"][0]["computeEnvironment"] == "fleetbook-spot"
    (jobdef,) = b.describe_job_definitions(status="ACTIVE")["jobDefinitions"]
    assert jobdef["containerProperties"]["image"] == IMAGE
    iam = boto3.client("iam", region_name="us-east-1")
    assert {r["RoleName"] for r in iam.list_roles()["Roles"]} >= {
        "fleetbook-batch-service", "fleetbook-batch-instance", "fleetbook-batch-job"}


def test_setup_without_an_image_says_what_to_do(batch_ctx):
    batch_ctx.config.batch.image = ""
    with pytest.raises(EngineError) as e:
        engine.setup(batch_ctx)
    assert "docker/Dockerfile" in e.value.message and "batch.image" in e.value.message


def test_submit_before_setup_says_what_to_do(batch_ctx):
    with pytest.raises(EngineError) as e:
        engine.submit(batch_ctx, "resize", shards=4)
    assert "invoke batch.setup" in e.value.message


def test_256_shard_jobs_and_256_dependent_jobs(batch_ctx, capsys):
    engine.setup(batch_ctx)
    plan = engine.submit(batch_ctx, "resize", shards=256, then="edges", args="--size 64")
    out = capsys.readouterr().out
    assert "256 job(s) per stage" in out and f"({IMAGES} in all)" in out  # the plan, printed before submitting
    jobs = plan["jobs"]
    assert [j["shard"] for j in jobs] == list(range(256))
    first = describe([j["job_id"] for j in jobs])
    second = describe([j["then_job_id"] for j in jobs])
    assert len(first) == len(second) == 256
    for j in jobs:
        a, b = first[j["job_id"]], second[j["then_job_id"]]
        assert a.get("dependsOn", []) == []
        assert [d["jobId"] for d in b["dependsOn"]] == [j["job_id"]]  # only the same shard of the first stage
        assert len(b["dependsOn"]) <= engine.MAX_DEPENDS_ON
        k = j["shard"]
        assert j["command"] == ["python", "workloads/resize.py", "--src", f"s3://{BUCKET}/src",
                                "--dst", f"s3://{BUCKET}/out", "--shard", f"{k}/256", "--threads", "8",
                                "--size", "64"]
        assert j["then_command"][:7] == ["python", "workloads/edges.py", "--src", f"s3://{BUCKET}/out",
                                         "--dst", f"s3://{BUCKET}/out-edges", "--shard"]
        assert a["container"]["command"] == j["command"]
    summary = engine.status(batch_ctx, run_id=plan["run_id"])
    counts = summary["runs"][plan["run_id"]]
    assert sum(counts.values()) == 512 and counts["SUCCEEDED"] == 512 and summary["failures"] == []


def test_status_summarises_by_state_and_lists_failures():
    pages = {
        "RUNNING": [{"jobName": "fb-20260101-120000-ab12-resize-3", "jobId": "j3"}],
        "SUCCEEDED": [{"jobName": f"fb-20260101-120000-ab12-resize-{k}", "jobId": f"j{k}"} for k in (0, 1)],
        "FAILED": [{"jobName": "fb-20260101-120000-ab12-edges-1", "jobId": "e1",
                    "statusReason": "Essential container in task exited", "container": {"exitCode": 3}},
                   {"jobName": "fb-20260202-090000-cd34-resize-0", "jobId": "x0",
                    "container": {"reason": "Host EC2 (instance i-1) terminated."}}],
    }
    s = engine.summarise(pages)
    assert s["runs"]["20260101-120000-ab12"]["SUCCEEDED"] == 2
    assert s["runs"]["20260101-120000-ab12"]["RUNNING"] == 1
    assert s["runs"]["20260101-120000-ab12"]["FAILED"] == 1
    assert [f["reason"] for f in s["failures"]] == ["Essential container in task exited",
                                                    "Host EC2 (instance i-1) terminated."]
    only = engine.summarise(pages, run_id="20260202-090000-cd34")
    assert list(only["runs"]) == ["20260202-090000-cd34"] and len(only["failures"]) == 1


def test_the_plan_warns_when_job_start_dominates(batch_ctx, capsys):
    engine.setup(batch_ctx)
    batch_ctx.config.batch.item_seconds = 0.02
    engine.submit(batch_ctx, "resize", shards=8)
    captured = capsys.readouterr()
    assert "expected overhead share" in captured.out and "warning: job start would be" in captured.err
    line, share = engine.plan_line(330_000, 256, 60.0, 0.02, 2)
    assert share == pytest.approx(60 / (60 + 1290 * 0.02 / 2))  # 1290 items x 20 ms / 2 threads per job
    assert "~1290 item(s) per job" in line


def test_the_warning_is_on_by_default_from_the_measured_item_time(batch_ctx, capsys, tmp_path):
    """No batch.item_seconds: the time per item measured on an aws.instance_type node decides the warning."""
    from playbooks.measure import profiles
    engine.setup(batch_ctx)
    batch_ctx.config.bench.profile = str(tmp_path / "none.json")
    batch_ctx.config.bench.profiles = str(tmp_path / "profiles")
    engine.submit(batch_ctx, "resize", shards=4)
    captured = capsys.readouterr()
    assert "unknown (set batch.item_seconds" in " ".join(captured.out.split()) and "warning" not in captured.err
    f = profiles.profile_file(batch_ctx, "aws", str(batch_ctx.config.aws.instance_type))
    f.parent.mkdir()
    f.write_text(json.dumps({"item_seconds": {"resize": 0.004}, "node": "demo-0", "created_at": "today"}))
    engine.submit(batch_ctx, "resize", shards=4)
    captured = capsys.readouterr()
    assert "per item 4.00 ms, measured on demo-0 (aws t3.small" in " ".join(captured.out.split())
    assert "warning: job start would be" in captured.err


def test_one_shard_job_command_runs_locally_against_moto_s3(batch_ctx, aws_env):
    engine.setup(batch_ctx)
    plan = engine.submit(batch_ctx, "resize", shards=4, args="--size 48")
    fw = runstate.fleetwork()
    items = [k[len("src/"):] for k in s3_keys("src/")]
    shard = max(range(4), key=lambda k: sum(fw.shard_of(i, 4) == k for i in items))
    mine = {i for i in items if fw.shard_of(i, 4) == shard}
    assert mine
    job = next(j for j in plan["jobs"] if j["shard"] == shard)
    command = describe([job["job_id"]])[job["job_id"]]["container"]["command"]
    assert command == job["command"] and command[0] == "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    run = subprocess.run([sys.executable, *command[1:]], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"done={len(mine)} skipped=0 failed=0" in run.stdout
    outs = s3_keys("out/")
    assert outs == sorted("out/" + os.path.splitext(i)[0] + ".jpg" for i in mine)
    s3 = boto3.client("s3", region_name="us-east-1")
    for key in outs:
        with Image.open(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())) as img:
            img.load()
            assert img.size == (48, 48) and img.format == "JPEG"
    again = subprocess.run([sys.executable, *command[1:]], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and f"done=0 skipped={len(mine)} failed=0" in again.stdout


def test_down_removes_everything(batch_ctx):
    batch_tasks.setup(batch_ctx)
    batch_tasks.submit(batch_ctx, workload="resize", shards=2)
    batch_tasks.status(batch_ctx)
    removed = engine.down(batch_ctx)
    assert removed["job_queue"] == removed["compute_environment"] == 1 and removed["job_definitions"] == 1
    b = batch_client()
    assert [q for q in b.describe_job_queues()["jobQueues"] if q["status"] != "DELETED"] == []
    assert [e for e in b.describe_compute_environments()["computeEnvironments"] if e["status"] != "DELETED"] == []
    assert b.describe_job_definitions(status="ACTIVE")["jobDefinitions"] == []
    iam = boto3.client("iam", region_name="us-east-1")
    assert not [r for r in iam.list_roles()["Roles"] if r["RoleName"].startswith("fleetbook-batch")]
    assert iam.list_instance_profiles()["InstanceProfiles"] == []
    again = engine.down(batch_ctx)
    assert not any(again.values())
    with pytest.raises(EngineError):
        engine.status(batch_ctx)


SPY = """
import collections, json, sys
import s3fs
calls = collections.Counter()
orig = s3fs.S3FileSystem._call_s3
async def spy(self, method, *a, **k):
    calls[method] += 1
    return await orig(self, method, *a, **k)
s3fs.S3FileSystem._call_s3 = spy
import runpy
sys.path.insert(0, "workloads")
sys.argv = ["workloads/resize.py", *sys.argv[1:]]
try:
    runpy.run_path("workloads/resize.py", run_name="__main__")   # python workloads/resize.py --src s3://...
except SystemExit as e:
    code = e.code
print("CALLS " + json.dumps(calls))
sys.exit(code)
"""


def test_s3_skip_if_done_is_one_listing_per_prefix_and_bad_inputs_are_recorded(batch_ctx):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.put_object(Bucket=BUCKET, Key="src/zz-broken.jpg", Body=b"not a jpeg at all")
    s3.put_object(Bucket=BUCKET, Key="src/.hidden/skip.jpg", Body=b"x")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    argv = [sys.executable, "-c", SPY, "--src", f"s3://{BUCKET}/src", "--dst", f"s3://{BUCKET}/out",
            "--size", "32", "--workers", "1"]
    first = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert f"done={IMAGES} skipped=0 failed=1" in first.stdout
    failed = [k for k in s3_keys("out/.failed/")]
    assert len(failed) == 1
    record = json.loads(s3.get_object(Bucket=BUCKET, Key=failed[0])["Body"].read())
    assert record["item"] == "zz-broken.jpg" and record["reason"] in ("not-an-image", "corrupt")
    second = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and f"done=0 skipped={IMAGES} failed=1" in second.stdout
    calls = json.loads(second.stdout.split("CALLS ", 1)[1])
    print("S3 calls of a run with nothing to do:", calls)
    # nothing to do: one listing of the source, one of the destination, one GET of the failure record; no
    # HEAD / GET / PUT per object
    assert calls.get("list_objects_v2", 0) == 2, calls
    assert calls.get("head_object", 0) == 0 and calls.get("put_object", 0) == 0, calls
    assert calls.get("get_object", 0) == 1, calls


def test_a_missing_source_is_a_one_line_error(batch_ctx):
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    for src in (f"s3://{BUCKET}/no-such-prefix", "s3://no-such-bucket-fb/src"):
        run = subprocess.run([sys.executable, "workloads/resize.py", "--src", src, "--dst", f"s3://{BUCKET}/o"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, run.stderr
        assert "resize: error:" in run.stderr and "Traceback" not in run.stderr
