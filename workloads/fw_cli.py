"""fw_cli: the command line of every workload (``main``): parse, check, list, run, print the summary.

Exit codes: 0 = every item is done or recorded as failed; 1 = some items are neither (e.g. a helper node
stopped early); 2 = the run cannot proceed (bad arguments, missing source, unwritable destination); 3 = the
destination failed in the middle of the run (disk full, read-only); 4 = unhealthy: the shared disk's mount
dropped and did not come back within ``$FLEETBOOK_MOUNT_WAIT`` seconds (no item in flight recorded as failed);
128+N = killed by signal N.
The last line on stdout is ``done=N skipped=N failed=N seconds=S items_per_s=R``; with ``--state DIR``,
``DIR/exit.json`` holds the code and the summary (and a copy goes to ``$FLEETBOOK_LOCAL_STATE``, the node's own
disk, which the head can read over SSH when the mount is gone).  Object-store ``--src``/``--dst`` go through ``fw_objstore``.
Standard library only.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import fw_notice
import fw_objstore
import fw_pool
import fw_progress
import fw_stop
from fw_disk import destination_failure
from fw_errors import EXIT_UNHEALTHY, BadInput, UsageError
from fw_failures import FAILED_DIR
from fw_outputs import temp_name, write_json_if_can
from fw_progress import log
from fw_runner import SUMMARY_KEYS, run_items
from fw_shards import parse_shard
from fw_stop import stop_on_signals


def main(workload, argv=None) -> int:
    """The command line of a workload: parse, check, list, run, print the summary; returns the exit code."""
    try:
        opts = workload.parse_args(argv)
    except SystemExit as e:                           # --help (0) or argparse's usage error (2)
        return e.code if isinstance(e.code, int) else 2
    state_dir = getattr(opts, "state", None)

    def finish(code, summary=None, error=None):
        write_exit(state_dir, code, summary, error)
        return code

    if "://" in str(opts.src or "") or "://" in str(opts.dst or ""):
        # object-store --src/--dst (s3://bucket/prefix): the same run, through workloads/fw_objstore.py (issue 6)
        return finish(*fw_objstore.run_cli_summary(workload, opts))   # issue 14: the summary in exit.json
    try:
        shard = parse_shard(opts.shard)
        check_numbers(opts)
        special = workload.handle(opts)
        if special is not None:
            return finish(special)
        workload.check(opts.src, opts.dst, opts)
        check_writable(opts.dst)
        items = list_source(workload, opts)
    except UsageError as e:
        print(f"{workload.name}: error: {e}", file=sys.stderr)
        return finish(2, error=str(e))

    with stop_on_signals():
        # --- notice hook (workloads/fw_notice.py): a preemption notice stops the run like SIGTERM, within its grace
        watcher = fw_notice.Watcher(_on_notice).start()
        try:
            summary = run_items(workload, items, opts.src, opts.dst, opts, state_dir=state_dir,
                                node=opts.node, shard=shard,
                                progress_bar=sys.stdout.isatty() and not opts.quiet)
        finally:
            watcher.stop()
    if fw_stop.preempted():
        summary["preempted"] = True
    # --- end of the notice hook
    code = exit_code(summary, workload.name)
    log(opts, "summary " + json.dumps(summary, sort_keys=True))
    print(" ".join(f"{k}={summary[k]}" for k in SUMMARY_KEYS), flush=True)
    return finish(code, summary)


def write_exit(state_dir: str | None, code: int, summary: dict | None = None, error: str | None = None) -> None:
    """``<state>/exit.json``: the code, the summary and the error (e.g. "shared disk full on the head: ...")."""
    rec = {"code": code, "summary": summary or {}, "finished_at": time.time()}
    for flag in ("preempted", "unhealthy"):
        if (summary or {}).get(flag):
            rec[flag] = True
    error = error or (summary or {}).get("error")
    if error:
        rec["error"] = error
    # the node's own disk first: the shared disk's mount may be what failed
    for folder in (os.environ.get("FLEETBOOK_LOCAL_STATE"), state_dir):
        write_json_if_can(folder, "exit.json", rec)


def _on_notice(grace: float) -> None:
    """A preemption notice (fw_notice.Watcher's thread): claim nothing new, let what is in flight finish within
    ``grace`` seconds, heartbeat state ``preempted``."""
    fw_pool.STOP_GRACE = max(0.0, grace - 2.0) if grace else fw_pool.STOP_GRACE
    fw_stop._STOP["preempted"] = True
    for prog in fw_progress.CURRENT:
        prog.extra["state"] = "preempted"
        prog.beat()
    if fw_stop._STOP["signal"] is None:
        fw_stop._STOP["signal"] = signal.SIGTERM


def check_numbers(opts) -> None:
    if opts.workers is not None and opts.workers < 1:
        raise UsageError("--workers must be >= 1")
    if opts.chunksize is not None and opts.chunksize < 1:
        raise UsageError("--chunksize must be >= 1")
    if opts.threads < 1:
        raise UsageError("--threads must be >= 1")


def check_writable(dst: str) -> None:
    """UsageError unless a folder can be made in ``dst`` (and ``dst/.failed`` exists)."""
    try:
        os.makedirs(os.path.join(dst, FAILED_DIR), exist_ok=True)
        # a folder, not a file: on a FUSE mount close() is asynchronous, and a file unlinked right after it
        # would linger as .fuse_hidden* among the outputs
        probe = temp_name(os.path.join(dst, ".probe"))
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError as e:
        why = destination_failure(e, dst, "not writable")
        raise UsageError(why if "disk full" in why else f"destination not writable: {dst} "
                                                         f"({e.strerror or e})") from None


def list_source(workload, opts) -> list[str]:
    try:
        return workload.list_items(opts.src, opts)
    except BadInput as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"cannot list the source {opts.src}: {e.strerror or e}") from None


def exit_code(summary: dict, name: str) -> int:
    """The exit code of a finished run (a stop or an error also said on stderr)."""
    if summary.get("stopped"):
        code = 128 + summary["stopped"]
        print(f"{name}: stopped by signal {summary['stopped']} (exit {code})", file=sys.stderr)
    elif summary.get("unhealthy"):
        code = EXIT_UNHEALTHY
    elif summary["complete"]:
        code = 0
    else:
        code = 3 if summary.get("error") else 1
    if summary.get("error"):
        print(f"{name}: error: {summary['error']}", file=sys.stderr)
    return code
