"""Data in and out: one transfer of many small files to S3 with 1 / 8 / 32 threads (``invoke data.pull``).

Question: how many files at once does a transfer of many small files need?  The write-ups found S3 ->
instance -> S3 network-bound until each container used 8 threads.  Here a folder of small files goes to a
moto server on loopback through ``playbooks.transfer`` (the code ``data.pull`` runs), straight (``0 ms``: the
server's own cost per request, CPU-bound on this machine's cores) and through a loopback proxy that waits
20 ms before each request (a bucket in another region: the case threads are for).

How to read it: within a latency, ``threads-1 / threads-N`` is the speed-up of N threads.  With a 20 ms wait
per request 8 threads overlap the waits (measured here at small scale: 1.78 s -> 0.53 s, 3.4x); at 0 ms the
server is the bottleneck from the start (0.41 s -> 0.51 s).  Past about 8, the loopback server itself (moto
and the proxy are Python processes on this machine's 2 cores) slows down under 32 concurrent connections
(1.4-1.5 s), so 32 looks worse here than it would against a real bucket, which answers in parallel.  Each round
writes to a fresh prefix, so every file is really sent.
"""
from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
from tests.support.cloud import moto_endpoint  # noqa: E402,F401  (a fixture: one moto server for this module)
from tests.support.transfer import CountingProxy  # noqa: E402

from playbooks.transfer import transfer  # noqa: E402
from playbooks.transfer.objects import S3Store  # noqa: E402
from playbooks.transfer.stores import LocalStore  # noqa: E402

THREADS = [1, 8, 32]
LATENCY_MS = [0, 20]
BUCKET = "bench-transfer"


@pytest.fixture(scope="module")
def s3(moto_endpoint, tmp_path_factory):
    """Credentials for moto only, a bucket, and a folder of small files."""
    import boto3
    old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=BUCKET)
    yield moto_endpoint
    for k, v in old.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def small_files(tmp_path_factory, bench_scale):
    n = {"small": 48, "default": 400, "large": 2_000}[bench_scale]
    root = tmp_path_factory.mktemp("transfer-src")
    for i in range(n):
        (root / f"{i % 8}").mkdir(exist_ok=True)
        (root / f"{i % 8}" / f"item-{i:05d}.txt").write_bytes(os.urandom(2_000))
    return root, n


@pytest.mark.parametrize("latency_ms", LATENCY_MS)
@pytest.mark.parametrize("threads", THREADS)
def test_many_small_files_to_s3(benchmark, s3, small_files, sized, threads, latency_ms):
    root, n = small_files
    proxy = CountingProxy(s3)
    proxy.delay, proxy.slow = latency_ms / 1000, ("GET", "PUT", "POST", "HEAD", "DELETE")
    benchmark.group = f"transfer: {n} small files to S3, {latency_ms} ms per request"
    benchmark.extra_info.update(threads=threads, latency_ms=latency_ms, files=n)
    src = LocalStore(root)

    def fresh():
        return (S3Store(BUCKET, f"run-{secrets.token_hex(4)}", proxy.url, threads),), {}

    try:
        out = benchmark.pedantic(lambda dst: transfer(src, dst, threads), setup=fresh,
                                 rounds=sized(small=1, default=2, large=3))
    finally:
        proxy.stop()
    assert (out["copied"], out["failed"]) == (n, 0)
