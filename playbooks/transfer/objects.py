"""Buckets as stores: ``s3://bucket/prefix`` through s3fs, ``gs://bucket/prefix`` through google-cloud-storage.

Listing is one paged walk of the prefix (S3 ListObjectsV2 and GCS objects.list hand out 1,000 keys a page):
what exists and what it holds (size, ETag / MD5 / CRC32C, last modification) comes from the listing, never
from a request per object.  An object becomes visible only when its upload completes: a single PUT up to
``part_size``, above it a multipart upload (S3, parts of exactly ``part_size``, at least 5 MiB, aborted on
error) or a
resumable upload (GCS), both finalised at the end.  A transfer killed mid-way leaves no object behind, at
most an unfinished S3 multipart upload, which the next transfer to that key aborts (``remove_stale``).
"""
from __future__ import annotations

import base64
import io
import math
import threading

from playbooks.transfer.stores import Entry

MIB = 1 << 20
S3_MIN_PART = 5 * MIB     # S3 refuses smaller parts (but the last)
PART_SIZES = (8 * MIB, 16 * MIB, 64 * MIB)   # aws cli and common SDK defaults, to recognise others' ETags


def parse_url(url: str) -> tuple[str, str, str]:
    """``s3://bucket/a/b`` -> ("s3", "bucket", "a/b")."""
    scheme, rest = url.split("://", 1)
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket: write {scheme}://BUCKET/PREFIX")
    return scheme, bucket, prefix.strip("/")


def read_full(src, n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at the end of ``src``."""
    chunks, got = [], 0
    while got < n:
        block = src.read(n - got)
        if not block:
            break
        chunks.append(block)
        got += len(block)
    return b"".join(chunks)


def s3_sums(etag: str, size: int, part_size: int) -> dict:
    """What identifies an S3 object's content: the MD5 of a single PUT, or a multipart ETag for each part size
    that gives its number of parts (ours, the common defaults, and size / parts rounded up to a MiB)."""
    etag = etag.strip('"')
    if "-" not in etag:
        return {"md5": etag}
    parts = int(etag.rsplit("-", 1)[1])
    guesses = {part_size, *PART_SIZES, math.ceil(size / parts / MIB) * MIB}
    return {f"etag:{p}": etag for p in sorted(guesses) if p and math.ceil(size / p) == parts}


class S3Store:
    kind = "objects"

    def __init__(self, bucket: str, prefix: str, endpoint: str = "", threads: int = 8, part_size: int = 8 * MIB):
        import s3fs
        client = {"endpoint_url": endpoint} if endpoint else {}
        self.fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, client_kwargs=client,
                                    config_kwargs={"max_pool_connections": max(10, threads)})
        self.bucket, self.prefix, self.part_size = bucket, prefix, max(part_size, S3_MIN_PART)
        self.label = f"s3://{bucket}/{prefix}"
        self.pending: list[str] = []

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _path(self, rel: str) -> str:
        return f"{self.bucket}/{self._key(rel)}"

    def check(self) -> None:
        """The bucket is there and answers (one request), else ValueError: never a failure per file."""
        try:
            self.fs.call_s3("head_bucket", Bucket=self.bucket)
        except (FileNotFoundError, PermissionError, OSError) as exc:
            raise ValueError(f"bucket s3://{self.bucket} cannot be used ({type(exc).__name__}: {exc}): check its "
                             "name, your credentials (aws configure / AWS_PROFILE) and data.s3_endpoint") from None

    def exists(self) -> bool:
        """Anything below the prefix (one request for one key)."""
        page = self.fs.call_s3("list_objects_v2", Bucket=self.bucket, MaxKeys=1,
                               **({"Prefix": self.prefix + "/"} if self.prefix else {}))
        return bool(page.get("KeyCount") or page.get("Contents"))

    def list(self) -> dict[str, Entry]:
        base = f"{self.bucket}/{self.prefix}".rstrip("/")
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        for name, info in found.items():
            if info.get("type") != "file" or name.endswith("/") or not name.startswith(base + "/"):
                continue
            rel = name[len(base) + 1:]
            modified = info.get("LastModified")
            out[rel] = Entry(rel, int(info["size"]), modified.timestamp() if modified else None,
                             s3_sums(info.get("ETag", ""), int(info["size"]), self.part_size))
        return out

    def remove_stale(self, keys: list[str] | None = None) -> int:
        """Abort the unfinished multipart uploads of the keys about to be written (a killed transfer's)."""
        wanted = {self._key(k) for k in (keys or [])}
        if not wanted:
            return 0
        n, kw = 0, {"Bucket": self.bucket, "Prefix": self.prefix}
        while True:
            page = self.fs.call_s3("list_multipart_uploads", **kw)
            for up in page.get("Uploads", []):
                if up["Key"] in wanted:
                    self.fs.abort_mpu(self.bucket, up["Key"], up["UploadId"])
                    n += 1
            if not page.get("IsTruncated"):
                return n
            kw.update(KeyMarker=page.get("NextKeyMarker", ""), UploadIdMarker=page.get("NextUploadIdMarker", ""))

    def open_read(self, rel: str, entry: Entry):
        if entry.size <= self.part_size:
            return io.BytesIO(self.fs.cat_file(self._path(rel)))
        return self.fs.open(self._path(rel), "rb", block_size=self.part_size, size=entry.size)

    def write(self, rel: str, entry: Entry, src) -> None:
        if entry.size <= self.part_size:
            self.fs.pipe_file(self._path(rel), read_full(src, entry.size + 1))
            return
        f = self.fs.open(self._path(rel), "wb", block_size=self.part_size)
        try:
            while block := read_full(src, self.part_size):   # parts of exactly part_size: a known ETag
                f.write(block)
        except BaseException:
            f.discard()       # aborts the multipart upload: nothing appears
            f.closed = True
            raise
        f.close()             # completes it: the object appears now


def _b64hex(value: str | None) -> str | None:
    return base64.b64decode(value).hex() if value else None


class GcsStore:
    kind = "objects"

    def __init__(self, bucket: str, prefix: str, endpoint: str = "", project: str = "", part_size: int = 8 * MIB):
        self.bucket, self.prefix, self.endpoint, self.project = bucket, prefix, endpoint, project
        self.part_size = part_size
        self.label = f"gs://{bucket}/{prefix}"
        self._local = threading.local()

    def _client(self):
        """One client per thread (each with its own HTTP session)."""
        client = getattr(self._local, "client", None)
        if client is None:
            from google.cloud import storage
            kw: dict = {"project": self.project or None}
            if self.endpoint:
                kw["client_options"] = {"api_endpoint": self.endpoint}
                if self.endpoint.startswith("http://"):   # an emulator: never send a real token over plain http
                    from google.auth.credentials import AnonymousCredentials
                    kw.update(credentials=AnonymousCredentials(), project=self.project or "fleetbook")
            client = self._local.client = storage.Client(**kw)
        return client

    def _blob(self, rel: str):
        return self._client().bucket(self.bucket).blob(f"{self.prefix}/{rel}" if self.prefix else rel)

    def check(self) -> None:
        """The bucket is there and answers (one request), else ValueError: never a failure per file."""
        from google.api_core import exceptions as gexc
        try:
            found = self._client().bucket(self.bucket).exists()
        except gexc.GoogleAPICallError as exc:
            raise ValueError(f"bucket gs://{self.bucket} cannot be used ({exc}): check your credentials "
                             "(gcloud auth application-default login) and data.gcs_endpoint") from None
        if not found:
            raise ValueError(f"bucket gs://{self.bucket} does not exist: create it (gcloud storage buckets create)")

    def exists(self) -> bool:
        """Anything below the prefix (one request for one object)."""
        base = f"{self.prefix}/" if self.prefix else None
        return any(True for _ in self._client().bucket(self.bucket).list_blobs(prefix=base, max_results=1, fields="items(name)"))

    def list(self) -> dict[str, Entry]:
        base = f"{self.prefix}/" if self.prefix else ""
        out = {}
        for blob in self._client().bucket(self.bucket).list_blobs(prefix=base or None,
                                              fields="items(name,size,md5Hash,crc32c,updated),nextPageToken"):
            if blob.name.endswith("/"):
                continue
            rel = blob.name[len(base):]
            sums = {k: v for k, v in (("crc32c", blob.crc32c), ("md5", _b64hex(blob.md5_hash))) if v}
            out[rel] = Entry(rel, int(blob.size or 0), blob.updated.timestamp() if blob.updated else None, sums)
        return out

    def remove_stale(self, keys: list[str] | None = None) -> int:
        return 0   # an unfinished resumable upload is never an object, and GCS drops it after a week

    def open_read(self, rel: str, entry: Entry):
        blob = self._blob(rel)
        if entry.size <= self.part_size:
            return io.BytesIO(blob.download_as_bytes(checksum="crc32c"))
        return blob.open("rb", chunk_size=self.part_size)     # reads its metadata once, then ranges

    def write(self, rel: str, entry: Entry, src) -> None:
        blob = self._blob(rel)
        blob.chunk_size = self.part_size if entry.size > self.part_size else None
        blob.upload_from_file(src, size=entry.size, checksum="crc32c", rewind=False)
