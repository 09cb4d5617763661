"""fleetwork: the one API of the fleetbook workloads (standard library only).

A workload is a module in this folder that defines ``WORKLOAD = SomeWorkload(...)`` and ends with
``if __name__ == "__main__": sys.exit(fleetwork.main(WORKLOAD))``; it imports ``fleetwork`` and nothing else of
this folder.  The head (``playbooks/``), the engines and the tests use the same names.  This module only gathers
them; each lives in the sibling module named for its concern, all shipped together to every node:

==============  ===============================================================================================
fw_workload     the Workload API: ``Workload``, ``FileWorkload``, finding a workload by name (``available``, ``load``)
fw_cli          ``main``: a workload's command line (exit codes 0/1/2/3/4/128+N, the summary line, exit.json)
fw_runner       ``run_items``: one node's run of a list of items (skip-if-done, shard order, inline or pool)
fw_pool         the process pool: chunk size, bounded chunks in flight, crashed workers isolated
fw_items        one item through its workload (``Job``, ``Task``, ``Result``), ``--threads``
fw_progress     heartbeat.json, the TTY bar, the log lines; ``count_progress`` of a destination
fw_stop         SIGTERM/SIGHUP/SIGINT: finish the items in progress, then stop
fw_shards       sha1(item) mod n, the order a node works in (own shard first, then helping), ``--shard i/n``
fw_machine      this machine's cores, its machine profile, the pool's defaults, the chunk size rule
fw_outputs      atomic writes through named temp files, the one walk of the destination, the temp sweep
fw_failures     the failure records in ``<dst>/.failed/``, output collisions
fw_inputs       listing the source once; reading a source file safely (links out of --src, FIFOs, empties)
fw_images       ``IMAGE_EXTENSIONS``, decoding an image safely with Pillow
fw_disk         the destination's disk: full, read-only or gone (``destination_failure``), path containment
fw_errors       ``BadInput`` (one item, recorded), ``UsageError`` (exit 2), ``DestinationError`` (exit 3),
                ``MountLost`` (waited for, then exit 4: unhealthy)
fw_faults       test-only fault injection at the writes (``$FLEETBOOK_FAULT``)
fw_claims       per-item claims on the shared disk (one node at a time per item; issue 13)
fw_notice       preemption notices (GCP/AWS metadata, a local file) that stop a run within its grace
fw_objstore     the same run on object-store ``--src``/``--dst`` (s3://..., fsspec); ``storage.py`` its command
==============  ===============================================================================================

The behaviour every workload shares: items are listed once; outputs already present are found with ONE
recursive ``os.scandir`` walk of the destination, never a stat per item; ``--shard i/n`` does the items whose
sha1(item) mod n == i first, then helps the other shards from their end; every output is written to a temp file
in its folder and renamed, and temp files of dead processes of this host are swept at start; a bad item raises
``BadInput(reason)`` and is recorded once in ``<dst>/.failed/<sha1(item)[:20]>.json`` (skipped by later runs
unless ``--retry-failed``); ``--state DIR`` gets ``heartbeat.json`` every ~2 s and ``exit.json`` at the end; a
process pool (``--workers``, ``--chunksize``, ``--start-method``) takes its defaults from this machine's cores
and its machine profile.  The last line on stdout is ``done=N skipped=N failed=N seconds=S items_per_s=R``.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:            # imported as ``workloads.fleetwork`` (or from its path): its siblings import
    sys.path.insert(0, HERE)
# the workloads import this module as ``fleetwork``: make that name this module even when the head imported it
# as ``workloads.fleetwork``, so that ``gridsearch.fleetwork is workloads.fleetwork``.
if __name__ != "fleetwork":
    sys.modules.setdefault("fleetwork", sys.modules[__name__])

from fw_cli import main  # noqa: E402
from fw_disk import DISK_FULL_BELOW, FATAL_ERRNOS, NAME_MAX, destination_failure, free_bytes  # noqa: E402
from fw_errors import BadInput, DestinationError, UsageError  # noqa: E402
from fw_failures import (FAILED_DIR, clear_failure, failure_path, find_collisions, read_failures,  # noqa: E402
                         record_failure)
from fw_images import IMAGE_EXTENSIONS, open_image, to_mode  # noqa: E402
from fw_inputs import check_regular_file, check_source, check_sources, list_files, read_bytes  # noqa: E402
from fw_machine import (DEFAULT_OVERHEAD_US, choose_chunksize, default_start_method, default_workers,  # noqa: E402
                        load_profile, machine_cores, profile_fits)
from fw_outputs import (HOST, TMP_MARK, atomic_write, pid_alive, scan_outputs, sweep_temps, temp_name,  # noqa: E402
                        write_json)
from fw_progress import count_progress  # noqa: E402
from fw_runner import SUMMARY_KEYS, run_items  # noqa: E402
from fw_shards import item_hash, parse_shard, shard_of, shard_order  # noqa: E402
from fw_workload import COMMON_EPILOG, FileWorkload, Workload, available, load  # noqa: E402

__all__ = [
    "BadInput", "COMMON_EPILOG", "DEFAULT_OVERHEAD_US", "DISK_FULL_BELOW", "DestinationError", "FAILED_DIR",
    "FATAL_ERRNOS", "FileWorkload", "HERE", "HOST", "IMAGE_EXTENSIONS", "NAME_MAX", "SUMMARY_KEYS", "TMP_MARK",
    "UsageError", "Workload", "atomic_write", "available", "check_regular_file", "check_source", "check_sources",
    "choose_chunksize", "clear_failure", "count_progress", "default_start_method", "default_workers",
    "destination_failure", "failure_path", "find_collisions", "free_bytes", "item_hash", "list_files", "load",
    "load_profile", "machine_cores", "main", "open_image", "parse_shard", "pid_alive", "profile_fits",
    "read_bytes", "read_failures", "record_failure", "run_items", "scan_outputs", "shard_of", "shard_order",
    "sweep_temps", "temp_name", "to_mode", "write_json",
]
