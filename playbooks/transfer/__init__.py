"""Moving files in and out of the shared root: stores, the plan of what to copy, the threads that copy.

``stores``     a folder here (``LocalStore``), what every store offers, the temp-file convention
``sftp``       the shared root on a head instance (``SftpStore``)
``objects``    ``s3://`` (s3fs) and ``gs://`` (google-cloud-storage) buckets
``digest``     content fingerprints (MD5, S3 multipart ETag, CRC32C), also run on a head instance
``plan``       the skip rules: which source entries the destination lacks or holds differently
``copy``       the thread pool that copies a plan, atomically per file
``locations``  from ``s3://b/p`` / ``gs://b/p`` / a folder / a shared-root path to a store

``transfer(src, dst, ...)`` is the whole job: list both sides at once (one walk each), plan, copy, sum up.
Nothing here imports a runbook step; ``playbooks/data.py`` is the task module.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from playbooks.transfer import copy
from playbooks.transfer.plan import Plan, make_plan


def listings(src, dst) -> tuple[dict, dict]:
    """Both sides listed at the same time (each is one walk: its own round trips)."""
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(src.list), pool.submit(dst.list)
        return a.result(), b.result()


def summary(src, dst, files: int, plan: Plan, result: copy.Result | None, seconds: float, dry_run: bool) -> dict:
    """What ``--json`` prints."""
    copied = result.copied if result else 0
    moved = result.bytes_copied if result else 0
    busy = result.seconds if result and result.seconds > 0 else None
    return {"from": src.label, "to": dst.label, "files": files, "to_copy": len(plan.copy), "copied": copied,
            "skipped": len(plan.skip), "failed": len(result.failed) if result else 0,
            "bytes_to_copy": plan.bytes_to_copy, "bytes_copied": moved, "bytes_skipped": plan.bytes_skipped,
            "seconds": round(seconds, 3),
            "files_per_s": round(copied / busy, 1) if busy else None,
            "mb_per_s": round(moved / busy / 1e6, 3) if busy else None,
            "dry_run": dry_run, "failures": [{"file": f, "error": e} for f, e in (result.failed if result else [])][:20]}


def transfer(src, dst, threads: int, dry_run: bool = False, started=None, on_bytes=lambda n: None,
             on_file=lambda e: None) -> dict:
    """Copy what ``dst`` lacks from ``src``; ``started(plan)`` is called once the plan is known (the bar)."""
    t0 = time.monotonic()
    for store in (src, dst):
        getattr(store, "check", lambda: None)()      # a bucket that is missing: one error, not one per file
    src_entries, dst_entries = listings(src, dst)
    plan = make_plan(src, dst, src_entries, dst_entries)
    if dry_run:
        return summary(src, dst, len(src_entries), plan, None, time.monotonic() - t0, True)
    dst.remove_stale([e.rel for e in plan.copy])
    if started:
        started(plan)
    result = copy.run(plan, src, dst, threads, on_bytes, on_file)
    return summary(src, dst, len(src_entries), plan, result, time.monotonic() - t0, False)
