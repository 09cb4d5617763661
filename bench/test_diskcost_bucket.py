"""The bucket lever of the shared disk's cost (issue 15): nodes read and write a bucket directly, the head only counts.

Question: what does a node pay per item to fetch its inputs from S3 and put its outputs there
(``resize.py --src s3://… --dst s3://…``, the path of ``invoke run --src s3://…``), next to what the sshfs mount
costs it (``bench/test_diskcost.py``)?  The head pays nothing per item on this path: the bucket serves the bytes
and the head lists the prefixes when ``progress`` looks (a few requests per poll, not per item).

How it is measured: the runner's CPU (one process, ``--workers 1``) for n and for k items, from a moto server on
loopback and from the local disk, differenced so that the start costs drop out:
``((s3(n) - s3(k)) - (local(n) - local(k))) / (n - k)`` is the node's object-store CPU per item (s3fs, botocore,
HTTP, the temp folder).  moto's own CPU per item is printed too, but it is no head's cost: S3 does that work.
Read: ``node_ms_per_item / work_ms_per_item`` against the mount's node + head figures.
"""
from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
from bench_support import make_photos, workload_cpu_s

REPO = Path(__file__).resolve().parent.parent
from tests.support.cloud import moto_endpoint  # noqa: E402,F401  (a fixture: one moto server for this module)

BUCKET = "bench-diskcost"


def _moto(endpoint: str) -> psutil.Process | None:
    port = endpoint.rsplit(":", 1)[1]
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any("moto_server" in w for w in cmd) and port in cmd:
            return p
    return None


@pytest.fixture(scope="module")
def bucket_data(moto_endpoint, tmp_path_factory, sized):
    """n photos in a folder and in the bucket, and the first k of them apart (the differencing's short run)."""
    import boto3

    n = sized(small=24, default=200)
    k = max(2, n // 8)
    base = tmp_path_factory.mktemp("diskcost-bucket")
    names = make_photos(base / "src", n)
    (base / "few").mkdir()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_endpoint, "FLEETBOOK_PROFILE": "/nonexistent"}
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket=BUCKET)
    for i, name in enumerate(sorted(names)):
        body = (base / "src" / name).read_bytes()
        s3.put_object(Bucket=BUCKET, Key=f"src/{name}", Body=body)
        if i < k:
            (base / "few" / name).write_bytes(body)
            s3.put_object(Bucket=BUCKET, Key=f"few/{name}", Body=body)
    return base, n, k, env, s3


def test_lever_nodes_read_and_write_a_bucket(bucket_data, moto_endpoint):
    base, n, k, env, s3 = bucket_data
    moto = _moto(moto_endpoint)
    rounds = {"local": [], "s3": [], "moto": []}       # per round: (CPU of all n, CPU of the first k)
    for r in range(2):
        local = [workload_cpu_s("resize", ["--src", str(base / part), "--dst", str(base / f"out-{part}-{r}")], env)
                 for part in ("src", "few")]
        m0 = moto.cpu_times() if moto else None
        remote = [workload_cpu_s("resize", ["--src", f"s3://{BUCKET}/{part}", "--dst",
                                            f"s3://{BUCKET}/out-{part}-{r}"], env)
                  for part in ("src", "few")]
        m1 = moto.cpu_times() if moto else None
        rounds["local"].append(local)
        rounds["s3"].append(remote)
        if m0 and m1:
            rounds["moto"].append((m1.user + m1.system - m0.user - m0.system) / (n + k))
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"out-src-{r}/")
        outputs = [o["Key"] for o in listed.get("Contents", []) if "/." not in o["Key"]]
        assert len(outputs) == n, f"{len(outputs)} outputs in the bucket for {n} inputs"
    # the least disturbed of each run (min over the rounds), then the difference: the min of the differences
    # picked a round whose short run was disturbed, and once went below 0 at the small scale
    per_item = {where: (min(r[0] for r in rounds[where]) - min(r[1] for r in rounds[where])) / (n - k)
                for where in ("local", "s3")}
    work = per_item["local"]
    node = max(0.0, per_item["s3"] - work)
    info = {"items": n, "work_ms_per_item": round(1000 * work, 3), "node_ms_per_item": round(1000 * node, 3),
            "node_over_work": round(node / work, 3) if work > 0 else None,
            "moto_ms_per_item": round(1000 * min(rounds["moto"]), 3) if rounds["moto"] else None}
    print(f"\nbucket lever (resize): work {info['work_ms_per_item']} ms/item, the node's object-store CPU "
          f"{info['node_ms_per_item']} ms/item ({info['node_over_work']} of the work), the head 0 (the bucket "
          f"serves; moto on loopback spent {info['moto_ms_per_item']} ms/item, which S3 does, not a head)")
    assert work > 0 and per_item["s3"] > 0
