"""From what the user typed to a store: ``s3://b/p``, ``gs://b/p``, a folder here, or a path in the shared root.

The shared root is on this machine (a local fleet, a cloud fleet with the tunnel head) or on the fleet's head
instance, reached over SFTP (``runs.disk.shared_disk``).  Endpoints for tests and proxies: ``data.s3_endpoint`` (else
boto's own ``AWS_ENDPOINT_URL``) and ``data.gcs_endpoint`` (plain ``http://`` = an emulator, no credentials).
"""
from __future__ import annotations

from pathlib import Path

from playbooks.transfer.objects import GcsStore, S3Store, parse_url
from playbooks.fs import safefs
from playbooks.transfer.stores import LocalStore

SCHEMES = ("s3", "gs")


def is_url(spec: str) -> bool:
    return "://" in spec


def outside(c, spec: str, threads: int):
    """The store of a local folder, an ``s3://`` or a ``gs://`` location (ValueError when it is none)."""
    if is_url(spec):
        scheme, bucket, prefix = parse_url(spec)
        part = int(float(c.config.data.part_mb) * (1 << 20))
        if scheme == "s3":
            return S3Store(bucket, prefix, str(c.config.data.s3_endpoint or ""), threads, part)
        if scheme == "gs":
            return GcsStore(bucket, prefix, str(c.config.data.gcs_endpoint or ""), str(c.config.gcp.project or ""),
                            part)
        raise ValueError(f"{spec!r}: only s3:// and gs:// locations, or a local folder")
    return LocalStore(Path(spec).expanduser().resolve())


def shared(disk, rel: str, what: str = "the shared-root side"):
    """The store of ``rel`` in the shared root, on the fleet's shared disk (``runs.disk.shared_disk``: here, or
    on its head instance)."""
    rel = "" if rel.strip() in ("", ".") else safefs.rel_path(rel.strip(), what)
    return disk.store(rel)
