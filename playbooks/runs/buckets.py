"""A run whose --src and --dst are in a bucket (``s3://bucket/prefix``): the nodes read and write the bucket
themselves (``workloads/fw_objstore.py``), so the data never crosses the head's disk; the run's state (record,
heartbeats, exit files) stays on the shared disk as for any run.

What the operator's side does for such a run: check the URLs, list the source once before starting (so a typo
is one line here, not an error on every node), tell the nodes which endpoint to use (never a credential: each
node uses its own AWS chain, see docs/cloud.md "Runs from bucket to bucket"), and count progress with ONE paged
listing of the source and ONE of the destination (``fw_objstore.count_progress``), with the operator's own
credentials on the operator's machine.  Only ``s3://``: the workloads read no other store (gs:// goes in and
out with ``data.push`` / ``data.pull``).
"""
from __future__ import annotations

import os

from playbooks.runs import layout
from playbooks.settings import setting
from playbooks.settings.errors import FleetbookError

SCHEMES = ("s3",)          # what the workloads' object-store path (fw_objstore, s3fs) reads and writes
_ITEMS: dict[str, list[str]] = {}   # run id -> the source's items: listed once per process (inputs do not change)


class BucketError(FleetbookError):
    """--src / --dst in a bucket that cannot be used for a run (one line, with the fix)."""


def is_bucket(path: str) -> bool:
    return "://" in str(path or "")


def is_bucket_run(record: dict) -> bool:
    return is_bucket(record.get("src")) or is_bucket(record.get("dst"))


def check_url(url: str, flag: str) -> str:
    """``s3://bucket/prefix`` as given (no trailing slash), or a one-line BucketError."""
    scheme, _, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme not in SCHEMES:
        raise BucketError(f"{flag} {url}: the workloads read and write s3:// buckets only; move gs:// data with "
                          f"`invoke data.push` / `data.pull`, or run on the shared disk")
    if not bucket or not prefix.strip("/") or ".." in prefix.split("/"):
        raise BucketError(f"{flag} {url}: give a bucket and a prefix, e.g. {flag} s3://my-bucket/images")
    return f"{scheme}://{bucket}/{prefix.strip('/')}"


def check_pair(src: str, dst: str) -> tuple[str, str]:
    """Both in a bucket (the workloads run bucket to bucket, or disk to disk), and not the same place."""
    if not (is_bucket(src) and is_bucket(dst)):
        raise BucketError(f"--src {src} --dst {dst}: both in a bucket, or both in the shared root (a bucket run "
                          "reads and writes objects; put inputs on the disk with `invoke data.push`)")
    src, dst = check_url(src, "--src"), check_url(dst, "--dst")
    if src == dst or dst.startswith(src + "/") or src.startswith(dst + "/"):
        raise BucketError(f"--src {src} and --dst {dst} overlap: give the outputs a prefix of their own")
    return src, dst


def endpoint(c) -> str:
    """The S3 endpoint the operator uses (``data.s3_endpoint``, else boto's ``AWS_ENDPOINT_URL_S3`` /
    ``AWS_ENDPOINT_URL``); "" = AWS itself.  An endpoint is an address, not a secret."""
    return str(setting(c, "data.s3_endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3")
               or os.environ.get("AWS_ENDPOINT_URL") or "")


def node_env(c) -> dict[str, str]:
    """What a node's workload is told for a bucket run: the endpoint only (credentials: the node's own)."""
    url = endpoint(c)
    return {"FLEETBOOK_S3_ENDPOINT": url} if url else {}


def _fw():
    fw = layout.fleetwork()
    import fw_objstore
    return fw, fw_objstore


def _sdk_error(exc: Exception) -> bool:
    return type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "s3fs", "fsspec")


def check_source(c, wl, opts, src: str) -> int:
    """The number of items in ``src`` (ONE paged listing), or a one-line BucketError (nothing there, a workload
    that cannot read a bucket, no credentials, no such bucket)."""
    _, objstore = _fw()
    from fw_errors import UsageError
    try:
        items = objstore.list_items(wl, src, opts, endpoint(c))
    except UsageError as exc:
        raise BucketError(str(exc)) from None
    except ImportError as exc:
        raise BucketError(f"--src {src} needs {exc.name} here and on the nodes: pip install s3fs") from None
    except Exception as exc:   # noqa: BLE001 - the SDK's own errors (no credentials, no such bucket): one line
        if isinstance(exc, OSError) or _sdk_error(exc):
            raise BucketError(f"--src {src}: {type(exc).__name__}: {exc} (your credentials: aws configure / "
                              "AWS_PROFILE; the endpoint: data.s3_endpoint)") from None
        raise
    if not items:
        raise BucketError(f"--src {src}: no inputs there for {wl.name} (an empty prefix, or a typo in the bucket "
                          "or prefix); put them there with `invoke data.pull --to s3://...` or your own tools")
    return len(items)


def _opts(wl, record: dict):
    import shlex
    return wl.parse_args(["--src", record["src"], "--dst", record["dst"], *shlex.split(record.get("args", ""))])


def count(c, record: dict) -> dict:
    """``{"total", "done", "failed", "pending"}`` of a bucket run: ONE paged listing of the source (once per
    process), ONE of the destination, one GET per failure record."""
    fw, objstore = _fw()
    wl = fw.load(record["workload"])
    opts = _opts(wl, record)
    url = endpoint(c)
    try:
        if record["run_id"] not in _ITEMS:
            _ITEMS[record["run_id"]] = objstore.list_items(wl, record["src"], opts, url)
        return objstore.count_progress(wl, record["src"], record["dst"], opts, items=_ITEMS[record["run_id"]],
                                       endpoint=url)
    except Exception as exc:   # noqa: BLE001
        if isinstance(exc, OSError) or _sdk_error(exc):
            raise BucketError(f"counting {record['dst']}: {type(exc).__name__}: {exc}") from None
        raise


def failures(c, record: dict) -> dict:
    """{item: failure record} of a bucket run (``<dst>/.failed/``)."""
    _, objstore = _fw()
    return objstore.read_failures(record["dst"], endpoint=endpoint(c))
