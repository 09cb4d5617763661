"""fw_objstore: run a workload whose --src / --dst are object-store URLs (s3://bucket/prefix, any fsspec URL).

    python workloads/resize.py --src s3://bucket/src --dst s3://bucket/out --shard 3/256 --threads 8

(``fleetwork.main`` hands object-store paths to ``run_cli`` here; ``python workloads/storage.py resize ...`` is
the same thing) does what the workload does on a shared disk, with the same rules:

* items are listed with ONE recursive listing of the source prefix, and the outputs already present (and the
  failure records) with ONE listing of the destination prefix: never a request per object;
* ``--shard k/n`` does only the items whose sha1(item) mod n == k (a Batch job per shard; a failed job is
  retried by Batch, not helped by the other shards);
* the items are fetched in batches into a local temp folder, processed by ``fw_runner.run_items`` (same
  code, same failure records) and each output is uploaded with one PUT, which is atomic on S3: an output
  either exists whole or not at all, so skip-if-done stays correct after a killed job;
* failure records go to ``<dst>/.failed/<hash>.json`` like on a disk.

With ``--state DIR`` (``invoke run`` on a fleet) the run writes ``DIR/heartbeat.json`` every ~2 s with its
counts over the whole run, as a run on a disk does; ``count_progress`` is what ``invoke progress`` counts with
(one listing of each prefix, on the operator's machine with the operator's credentials).

The endpoint comes from ``$FLEETBOOK_S3_ENDPOINT``, ``$AWS_ENDPOINT_URL_S3`` or ``$AWS_ENDPOINT_URL`` when set
(a moto server in the tests); credentials from the usual AWS chain of the machine it runs on (a Batch job's
role, a fleet node's instance profile, ``~/.aws/credentials`` of the node's user): nobody sends it any.
Needs fsspec + s3fs.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
import time

from fw_errors import UsageError
from fw_failures import FAILED_DIR, failure_path, find_collisions
from fw_progress import Progress, tally
from fw_runner import SUMMARY_KEYS, run_items
from fw_shards import item_hash, parse_shard, shard_of

FETCH_BATCH = 64          # items fetched, processed and uploaded together (bounded local disk)


def is_remote(path) -> bool:
    text = str(path or "")
    return "://" in text and not text.startswith("file://")


def s3_endpoint() -> str:
    """The S3 endpoint this process was given ("" = AWS itself)."""
    return (os.environ.get("FLEETBOOK_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or "")


def storage_options(url: str, endpoint: str | None = None) -> dict:
    if url.startswith(("s3://", "s3a://")):
        endpoint = s3_endpoint() if endpoint is None else endpoint
        return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    return {}


def filesystem(url: str, endpoint: str | None = None):
    """(fsspec filesystem, path inside it without the protocol, with no trailing slash)."""
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(url, **storage_options(url, endpoint))
    return fs, path.rstrip("/")


def list_relative(fs, root: str) -> list[str]:
    """Relative '/'-separated names of every object below ``root``: ONE recursive listing (paginated)."""
    prefix = root + "/"
    try:
        found = fs.find(root, detail=False)
    except FileNotFoundError:
        return []
    return sorted(p[len(prefix):] for p in found if p.startswith(prefix))


def visible(rel: str) -> bool:
    """Not a dot-file, not below a dot-folder, not a temp file (the same rule as fleetwork's scans)."""
    return not any(part.startswith(".") for part in rel.split("/"))


def list_items(workload, src_url: str, opts, endpoint: str | None = None) -> list[str]:
    exts = tuple(e.lower() for e in getattr(workload, "extensions", ()) or ())
    if not exts:
        raise UsageError(f"{workload.name} lists its items itself: object-store sources are "
                                   "supported for file workloads only (resize, edges, features)")
    fs, root = filesystem(src_url, endpoint)
    return [rel for rel in list_relative(fs, root) if visible(rel) and rel.lower().endswith(exts)]


def scan_outputs(dst_url: str) -> set[str]:
    """Relative names of the outputs already in the destination: one listing of its prefix."""
    fs, root = filesystem(dst_url)
    return {rel for rel in list_relative(fs, root) if visible(rel)}


def read_failures(dst_url: str, listing: list[str] | None = None, endpoint: str | None = None) -> dict[str, dict]:
    """item -> failure record, from ``<dst>/.failed/`` (one listing, or ``listing`` of the whole destination
    when the caller has it already, then one GET per failed item)."""

    fs, root = filesystem(dst_url, endpoint)
    folder = FAILED_DIR + "/"
    if listing is None:
        listing = [folder + rel for rel in list_relative(fs, root + "/" + FAILED_DIR)]
    out = {}
    for rel in listing:
        name = rel[len(folder):] if rel.startswith(folder) else ""
        if not name.endswith(".json") or "/" in name or name.startswith("."):
            continue
        try:
            rec = json.loads(fs.cat_file(f"{root}/{rel}"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("item"), str):
            out[rec["item"]] = rec
    return out


def run_remote(workload, opts, *, batch: int = FETCH_BATCH) -> dict:
    """Run the workload on object-store --src/--dst (see the module docstring); returns fleetwork's summary."""
    t0 = time.perf_counter()
    if not is_remote(opts.src) or not is_remote(opts.dst):
        raise UsageError("--src and --dst must both be object-store URLs (s3://bucket/prefix)")
    shard = parse_shard(opts.shard)
    retry = bool(getattr(opts, "retry_failed", False))
    sfs, sroot = filesystem(opts.src)
    dfs, droot = filesystem(opts.dst)
    items = list_items(workload, opts.src, opts)
    if not items and not sfs.exists(sroot):          # a typo in the bucket or prefix is not "nothing to do"
        raise UsageError(f"source not found: {opts.src}")
    collisions = find_collisions(workload, items, opts)
    if shard:
        items = [i for i in items if shard_of(i, shard[1]) == shard[0]]
    listing = list_relative(dfs, droot)                      # ONE listing of the destination prefix
    outputs = {rel for rel in listing if visible(rel)}
    failures = read_failures(opts.dst, listing)
    todo, skipped, failed = [], 0, 0
    for item in items:
        if item not in collisions and workload.output_for(item, opts) in outputs:
            skipped += 1
        elif item in failures and not retry:
            failed += 1
        else:
            todo.append(item)
    totals = {"done": 0, "skipped": skipped, "failed": failed}
    errors = []
    beat = Progress(len(items), getattr(opts, "node", None) or "", getattr(opts, "state", None), False)
    beat.skipped, beat.failed = skipped, failed
    beat.start()
    beat.start_thread()                    # heartbeat.json every ~2 s, counted over the whole run
    inner = copy.copy(opts)
    inner.state = None                     # the batches below write no heartbeats of their own
    try:
        _batches(workload, inner, todo, batch, sfs, sroot, dfs, droot, collisions, failures, totals, errors, beat)
    finally:
        beat.stop()
    seconds = time.perf_counter() - t0
    summary = {**totals, "seconds": round(seconds, 3), "items_per_s": round(totals["done"] / seconds, 2),
               "total": len(items), "todo": len(todo), "storage": "object-store"}
    summary["complete"] = sum(totals.values()) == len(items) and not errors
    if errors:
        summary["error"] = errors[0]
    return summary


def _batches(workload, opts, todo, batch, sfs, sroot, dfs, droot, collisions, failures, totals, errors, beat):
    """Fetch, process and upload ``todo`` ``batch`` items at a time, adding to ``totals`` and ``beat``."""
    with tempfile.TemporaryDirectory(prefix="fleetbook-s3-") as tmp:
        lsrc, ldst = os.path.join(tmp, "src"), os.path.join(tmp, "dst")
        for k in range(0, len(todo), batch):
            part = todo[k:k + batch]
            _fetch(sfs, sroot, part, lsrc, ldst)
            summary = run_items(workload, part, lsrc, ldst, opts, node=getattr(opts, "node", None),
                                shard=None, collisions={i: collisions[i] for i in part if i in collisions},
                                progress_bar=False)
            if summary.get("error"):
                errors.append(summary["error"])
            uploads, stale = _results(workload, opts, part, ldst, droot, failures)
            for record in stale:                                       # it worked this time (--retry-failed)
                dfs.rm_file(record)
            if uploads:
                dfs.put([u[0] for u in uploads], [u[1] for u in uploads])  # one PUT per object: atomic
            for key in ("done", "skipped", "failed"):
                totals[key] += summary[key]
                setattr(beat, key, getattr(beat, key) + summary[key])
            if summary.get("error"):
                beat.error = summary["error"]


def _fetch(sfs, sroot: str, part: list[str], lsrc: str, ldst: str) -> None:
    """The source objects of ``part`` into the empty local folder ``lsrc`` (``ldst`` emptied too)."""
    shutil.rmtree(lsrc, ignore_errors=True)
    shutil.rmtree(ldst, ignore_errors=True)
    os.makedirs(lsrc)
    locals_ = [os.path.join(lsrc, *i.split("/")) for i in part]
    for path in locals_:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    sfs.get([f"{sroot}/{i}" for i in part], locals_)           # concurrent GETs (s3fs)


def _results(workload, opts, part: list[str], ldst: str, droot: str,
             failures: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """What ``part`` made in ``ldst``: ((local file, object) of its outputs and failure records, the failure
    records in the destination of the items that are done now)."""
    uploads, stale = [], []
    for item in part:
        out = workload.output_for(item, opts)
        local_out = os.path.join(ldst, *out.split("/"))
        if os.path.exists(local_out):
            uploads.append((local_out, f"{droot}/{out}"))
            if item in failures:
                stale.append(failure_path(droot, item))
        record = failure_path(ldst, item)
        if os.path.exists(record):
            uploads.append((record, f"{droot}/{FAILED_DIR}/{os.path.basename(record)}"))
    return uploads, stale


def count_progress(workload, src_url: str, dst_url: str, opts, items: list[str] | None = None,
                   endpoint: str | None = None) -> dict:
    """{"total","done","failed","pending"} of object-store --src/--dst, by the same rule as
    ``fw_progress.count_progress`` on a disk: ONE listing of the source prefix (none when ``items`` is given)
    and ONE of the destination prefix (its failure records included), paged by the store (1,000 keys a page),
    then one GET per failure record only."""
    items = list_items(workload, src_url, opts, endpoint) if items is None else items
    dfs, droot = filesystem(dst_url, endpoint)
    dfs.invalidate_cache()                       # a listing of now, not fsspec's cache of an earlier one
    listing = list_relative(dfs, droot)
    outputs = {rel for rel in listing if visible(rel)}
    return tally(workload, items, opts, outputs, read_failures(dst_url, listing, endpoint))


def run_cli(workload, opts) -> int:
    """Run on object-store paths and print the summary line; the exit code of ``fleetwork.main``."""
    return run_cli_summary(workload, opts)[0]


def run_cli_summary(workload, opts) -> tuple[int, dict | None, str | None]:
    """``run_cli``'s exit code, with the summary and the error for the run's exit file (``fw_cli.write_exit``)."""
    try:
        summary = run_remote(workload, opts)
    except UsageError as e:
        print(f"{workload.name}: error: {e}", file=sys.stderr)
        return 2, None, str(e)
    except (OSError, ValueError, ImportError) as e:   # no such bucket, no credentials, no s3fs...
        print(f"{workload.name}: error: object store: {type(e).__name__}: {e}", file=sys.stderr)
        return 2, None, f"object store: {type(e).__name__}: {e}"
    if summary.get("error"):
        print(f"{workload.name}: error: destination failed: {summary['error']}", file=sys.stderr)
    print(" ".join(f"{k}={summary[k]}" for k in SUMMARY_KEYS), flush=True)
    return (0 if summary["complete"] else (3 if summary.get("error") else 1)), summary, None

