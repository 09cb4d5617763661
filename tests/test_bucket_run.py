"""`invoke run` from bucket to bucket (issue 14): a real local fleet resizes s3://.../src into s3://.../out on a
moto server, `progress` counts there with paged listings (counted through a proxy: one listing per prefix, never
a request per object), and a second run skips everything.

The nodes get the endpoint from the run (an address) and never a credential from the operator: each node uses
its own AWS chain, here a test-only ``~/.aws/credentials`` in the node's own home (what an instance profile is
on a cloud).  That home is the node's only as root (without root a node is the operator's own user), so the
fleet part needs root.
"""
from __future__ import annotations

import io
import json
import os
import pwd
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from invoke.exceptions import Exit
from PIL import Image

from playbooks import progress, run, teardown
from playbooks.providers import local
from playbooks.runs import buckets
from playbooks.runs.samples import make_samples
from tests.support.fleet import ROOT, bring_up, make_ctx
from tests.support.transfer import CountingProxy

pytestmark = [pytest.mark.timeout(300)]
NAME = "bkt" + secrets.token_hex(2)
BUCKET = "fb-run"
IMAGES = 40


def s3():
    return boto3.client("s3", region_name="us-east-1")


def keys(prefix: str) -> list[str]:
    pages = s3().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def put_many(items: dict[str, bytes]) -> None:
    client = s3()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=BUCKET, Key=kv[0], Body=kv[1]), items.items()))


def listings(proxy: CountingProxy) -> list[str]:
    """The ListObjectsV2 requests the proxy saw (one per page of 1,000 keys)."""
    with proxy.lock:
        return [q for m, p, q in proxy.log if m == "GET" and "list-type=2" in q]


def give_node_credentials(c, name: str) -> None:
    """Each node's own test-only AWS credentials, in its own home (0600, its own): no operator key goes there."""
    for node in local.list_nodes(c, name):
        aws = Path(node.labels["home"]) / ".aws"
        aws.mkdir(exist_ok=True)
        (aws / "credentials").write_text("[default]\naws_access_key_id = node-testing\n"
                                         "aws_secret_access_key = node-testing\n")
        (aws / "config").write_text("[default]\nregion = us-east-1\n")
        ids = pwd.getpwnam(node.user)
        for p in (aws, aws / "credentials", aws / "config"):
            os.chown(p, ids.pw_uid, ids.pw_gid)
            os.chmod(p, 0o700 if p.is_dir() else 0o600)


@pytest.fixture(scope="module")
def fleet_ctx(fleet_base):
    c = make_ctx(fleet_base, job__lost_after=20.0, job__poll=0.3)
    yield c
    teardown.teardown(c, name=NAME)


@pytest.mark.fleet
@pytest.mark.skipif(not ROOT, reason="a node's own home (its own credentials) needs per-node users: root")
def test_resize_from_bucket_to_bucket_then_progress_then_rerun_skips(fleet_ctx, aws_env, tmp_path, monkeypatch,
                                                                   capsys):
    c = fleet_ctx
    proxy = CountingProxy(aws_env)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)   # the operator's endpoint: the nodes are told it too
        s3().create_bucket(Bucket=BUCKET)
        make_samples(tmp_path / "images", IMAGES, size=(160, 120))
        put_many({f"src/{p.relative_to(tmp_path / 'images').as_posix()}": p.read_bytes()
                  for p in (tmp_path / "images").rglob("*.jpg")})
        bring_up(c, NAME, n=2)
        give_node_credentials(c, NAME)
        capsys.readouterr()
        run.run_(c, workload="resize", src=f"s3://{BUCKET}/src", dst=f"s3://{BUCKET}/out", args="--size 32",
                 name=NAME, wait=True)
        outs = [k for k in keys("out/") if not k.startswith("out/.")]
        assert len(outs) == IMAGES
        for key in outs[:5]:
            with Image.open(io.BytesIO(s3().get_object(Bucket=BUCKET, Key=key)["Body"].read())) as img:
                assert img.size == (32, 32) and img.format == "JPEG"
        assert not (Path(c.config.shared.root) / "out").exists()       # the data never touched the shared disk
        from playbooks.runs import state as runstate
        first = runstate.load_run(c)
        assert first["s3_endpoint"] == proxy.url
        node = local.list_nodes(c, NAME)[0]
        command = run.node_command(node, first, 0, [], None, {})
        assert f"FLEETBOOK_S3_ENDPOINT={proxy.url}" in command and "AWS_" not in command   # an address, no key
        capsys.readouterr()
        proxy.clear()
        progress.progress(c, json_=True, name=NAME)
        snap = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (snap["total"], snap["done"], snap["failed"]) == (IMAGES, IMAGES, 0)
        assert [n["state"] for n in snap["nodes"]] == ["done", "done"]
        # a fresh process lists the source once and the destination once (each fits one page), and no object
        lists = listings(proxy)
        assert len(lists) <= 2 and not proxy.requests("HEAD") and not [
            p for p in proxy.requests("GET") if p.count("/") > 1], proxy.log
        # the second run skips everything: no object read or written
        proxy.clear()
        record = run.start(c, NAME, local.list_nodes(c, NAME), "resize", f"s3://{BUCKET}/src",
                           f"s3://{BUCKET}/out", "--size 32")
        again = progress.wait_until_finished(c, record)
        assert again["done"] == IMAGES and again["processed"] == 0
        assert not proxy.requests("PUT") and not [p for p in proxy.requests("GET") if "/src/" in p]
        summaries = [runstate.node_files(c, record["run_id"], e["name"])[1]["summary"] for e in record["nodes"]]
        assert sum(s["skipped"] for s in summaries) == IMAGES and sum(s["done"] for s in summaries) == 0
    finally:
        proxy.stop()


def test_progress_of_a_bucket_run_is_paged_listings_only(aws_env, tmp_path, monkeypatch, capsys):
    """2,100 inputs and 1,000 outputs + 3 failure records: 3 + 2 listing pages and the 3 records, nothing more."""
    proxy = CountingProxy(aws_env)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        s3().create_bucket(Bucket=BUCKET)
        objects = {f"src/d{i % 7}/img-{i:05d}.jpg": b"x" for i in range(2100)}
        objects |= {f"out/d{i % 7}/img-{i:05d}.jpg": b"y" for i in range(1000)}
        from tests.support.fleet import make_ctx as ctx_of
        c = ctx_of(tmp_path)
        for i in range(1000, 1003):
            objects[f"out/.failed/{i}.json"] = json.dumps({"item": f"d{i % 7}/img-{i:05d}.jpg",
                                                           "reason": "bad-image"}).encode()
        put_many(objects)
        record = {"run_id": "r1", "fleet": "f", "provider": "local", "workload": "resize",
                  "src": f"s3://{BUCKET}/src", "dst": f"s3://{BUCKET}/out", "args": "", "started_at": 1.0,
                  "nodes": []}
        proxy.clear()
        snap = progress.snapshot(c, record)
        assert (snap["total"], snap["done"], snap["failed"]) == (2100, 1000, 3)
        assert len(listings(proxy)) == 3 + 2
        assert len(proxy.log) == 3 + 2 + 3, proxy.log          # + one GET per failure record, nothing else
        proxy.clear()
        progress.snapshot(c, record)                          # a later poll: the inputs are not listed again
        assert len(listings(proxy)) == 2
    finally:
        proxy.stop()


def test_bucket_paths_are_checked_in_one_line():
    with pytest.raises(buckets.BucketError, match="both in a bucket, or both in the shared root"):
        run.run_paths("s3://b/src", "out")
    with pytest.raises(buckets.BucketError, match="s3:// buckets only"):
        run.run_paths("gs://b/src", "gs://b/out")
    with pytest.raises(buckets.BucketError, match="overlap"):
        run.run_paths("s3://b/src", "s3://b/src/out")
    with pytest.raises(buckets.BucketError, match="a bucket and a prefix"):
        run.run_paths("s3://b", "s3://b/out")
    assert run.run_paths("s3://b/src/", "s3://b/out") == ("s3://b/src", "s3://b/out")
    assert run.run_paths("src", "out") == ("src", "out")
    with pytest.raises(Exit):
        run.run_paths("../src", "out")


def test_a_bucket_run_on_a_head_instance_counts_in_the_bucket_and_reads_the_nodes_there(aws_env, tmp_path,
                                                                                      monkeypatch):
    """The head instance's count command skips a bucket run's data (its src/dst are no folders there) and still
    reads the nodes' heartbeats and exit files; the counts come from the bucket, from this machine."""
    import subprocess
    import sys
    from playbooks.runs import disk as rundisk
    from playbooks.runs import head_instance as hi
    from playbooks.settings.defaults import REPO
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env)
    s3().create_bucket(Bucket=BUCKET)
    put_many({"src/a.jpg": b"x", "src/b.jpg": b"x", "out/a.jpg": b"y",
              "out/.failed/1.json": json.dumps({"item": "b.jpg", "reason": "bad-image"}).encode()})
    record = {"run_id": "r2", "fleet": "f", "provider": "gcp", "workload": "resize", "src": f"s3://{BUCKET}/src",
              "dst": f"s3://{BUCKET}/out", "args": "", "started_at": 1.0, "nodes": [{"name": "n0", "shard": 0}]}
    state = tmp_path / "root" / ".fleetbook" / "runs" / "r2" / "nodes" / "n0"
    state.mkdir(parents=True)
    (state / "exit.json").write_text(json.dumps({"code": 0, "finished_at": 5.0, "summary": {"done": 1}}))
    out = subprocess.run([sys.executable, "-c", hi.COUNT_SCRIPT, str(tmp_path / "root"), json.dumps(record)],
                         cwd=REPO / "workloads", capture_output=True, text=True, timeout=60)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["counts"] is None and data["failures"] == {} and data["nodes"]["n0"][1]["code"] == 0, out.stderr

    class Head:                          # the RemoteHead's one call a tally makes, answered by that script's output
        c = make_ctx(tmp_path)

        def snapshot_data(self, rec):
            return data

    disk = rundisk.HeadDisk(Head())
    tally = disk.tally(record)
    assert tally.counts == {"total": 2, "done": 1, "failed": 1, "pending": 0}
    assert tally.node("n0")[1]["code"] == 0
    assert set(disk.failures(record)) == {"b.jpg"}


def test_invoke_run_refuses_a_store_the_workloads_cannot_read_in_one_line(tmp_path):
    from tests.support.fleet import invoke_cli
    for args, said in ((["--src", "gs://b/images", "--dst", "gs://b/out"], "s3:// buckets only"),
                       (["--src", "s3://b/images", "--dst", "out"], "both in a bucket, or both in the shared root")):
        done = invoke_cli(tmp_path, "run", "--workload", "resize", *args)
        assert done.returncode == 1 and said in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
