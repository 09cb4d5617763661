"""Data in and out of the shared root: push inputs in, pull results out (a local folder, s3://, gs://).

``invoke data.push --from ./images --to src`` and ``invoke data.pull --from out --to s3://bucket/results``.
The shared-root side is a path relative to ``shared.root``: on this machine, or on the fleet's head instance
over SFTP.  Many files at once on threads; what is already there and the same is skipped (size + mtime for
files, size + ETag / MD5 / CRC32C for objects), and every file appears only when complete, so a transfer that
was killed is resumed by running it again.  See ``playbooks/transfer/``.
"""
from __future__ import annotations

import json
import threading
import time

from invoke import task
from invoke.exceptions import Exit
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, ProgressColumn, TextColumn, TransferSpeedColumn
from rich.text import Text

from playbooks.settings import setting
from playbooks.runs import keep
from playbooks.runs import disk as rundisk
from playbooks.settings.defaults import profile_path
from playbooks.fleet import fleet_name, provider_of
from playbooks.providers import STOPPED, TERMINATED, supports
from playbooks.runs import head_instance
from playbooks.settings.errors import user_errors
from playbooks.transfer import locations, transfer

console = Console()
DEFAULT_THREADS = 8


def default_threads(c) -> int:
    """``data.threads``, else the machine profile's best thread count for waiting items, else 8."""
    if setting(c, "data.threads") > 0:
        return setting(c, "data.threads")
    try:
        profile = json.loads(profile_path(c).read_text())
    except (OSError, ValueError):
        return DEFAULT_THREADS
    if (profile.get("transfer") or {}).get("threads"):
        return int(profile["transfer"]["threads"])
    speedups = ((profile.get("thread_process_crossover") or {}).get("speedup_vs_processes") or {})
    best = max(((v, int(k)) for k, v in speedups.items() if v), default=None)
    return min(best[1], 32) if best else DEFAULT_THREADS


class FilesColumn(ProgressColumn):
    """``412/1,003 files  187 files/s``"""

    def render(self, task) -> Text:
        done, total = task.fields.get("files", 0), task.fields.get("total_files", 0)
        elapsed = task.elapsed or 0
        rate = done / elapsed if elapsed > 0 else 0.0
        return Text(f"{done:,}/{total:,} files  {rate:,.0f} files/s")


def wake_head(c, fleet: str, provider: str) -> None:
    """A head instance its TTL stopped holds the shared root on its disk: start it again (with the fleet's TTL)
    so that data can go in or out, rather than ever taking this machine's folder for it."""
    prov = provider_of(c, provider)
    if not supports(prov, "start_head"):
        return
    node = prov.head_node(c, fleet)
    if node is None or node.state != STOPPED:
        return
    console.print(f"the head instance {node.name} is stopped (its TTL stops it); starting it to reach the shared "
                  f"root on its disk", markup=False)
    with user_errors():
        prov.start_head(c, fleet, setting(c, "fleet.ttl_hours"))
    head_instance.forget(c, prov.name, fleet)


def _side(c, where: str, rel: str, name: str, provider: str):
    fleet = fleet_name(c, name)
    wake_head(c, fleet, provider)
    try:
        return locations.shared(rundisk.shared_disk(c, provider, fleet), rel, where)
    except ValueError as exc:
        raise Exit(f"{where}: {exc}") from None


def _outside(c, where: str, spec: str, threads: int):
    if not spec:
        raise Exit(f"say where: {where} ./folder, {where} s3://bucket/prefix or {where} gs://bucket/prefix")
    try:
        return locations.outside(c, spec, threads)
    except ValueError as exc:
        raise Exit(f"{where} {exc}") from None
    except ImportError as exc:
        raise Exit(f"{spec} needs {exc.name}: pip install -e '.[cloud,engines]'") from None


def _run(c, src, dst, threads: int, json_: bool, dry_run: bool) -> dict:
    if getattr(src, "root", None) is not None and getattr(src, "root", None) == getattr(dst, "root", None):
        raise Exit(f"--from and --to are the same folder ({src.label})")
    bar = None
    lock = threading.Lock()
    state = {"files": 0}

    def started(plan):
        nonlocal bar
        if json_ or not plan.copy:
            return
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                       TransferSpeedColumn(), FilesColumn(), console=console, transient=False)
        bar.start()
        bar.add_task(f"{len(plan.copy):,} to copy, {len(plan.skip):,} already there",
                     total=max(1, plan.bytes_to_copy), files=0, total_files=len(plan.copy))

    def on_bytes(n):
        if bar is not None:
            bar.advance(0, n)

    def on_file(_entry):
        with lock:
            state["files"] += 1
            if bar is not None:
                bar.update(0, files=state["files"])

    try:
        out = transfer(src, dst, threads, dry_run, started, on_bytes, on_file)
    except ValueError as exc:
        raise Exit(str(exc)) from None
    except OSError as exc:
        raise Exit(f"transfer {src.label} -> {dst.label} failed: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # the SDKs' own errors (no credentials, no such bucket): one line, no traceback
        if type(exc).__module__.split(".")[0] in ("botocore", "google", "s3fs", "aiobotocore", "paramiko"):
            raise Exit(f"transfer {src.label} -> {dst.label} failed: {type(exc).__name__}: {exc}") from None
        raise
    finally:
        if bar is not None:
            bar.stop()
    if json_:
        print(json.dumps(out), flush=True)
    elif dry_run:
        console.print(f"[dry run] {out['from']} -> {out['to']}: would copy {out['to_copy']:,} file(s) "
                      f"({out['bytes_to_copy'] / 1e6:,.1f} MB), skip {out['skipped']:,} already there", markup=False)
    else:
        console.print(f"{out['from']} -> {out['to']}: {out['copied']:,} copied ({out['bytes_copied'] / 1e6:,.1f} MB"
                      + (f", {out['mb_per_s']:.1f} MB/s, {out['files_per_s']:.0f} files/s" if out["mb_per_s"] else "")
                      + f"), {out['skipped']:,} already there, {out['failed']} failed", markup=False)
    if out["failed"]:
        first = "; ".join(f"{f['file']}: {f['error']}" for f in out["failures"][:3])
        raise Exit(f"{out['failed']} file(s) failed ({first}); run the same command again to retry them")
    return out


HELP = {
    "threads": "files at once (default: data.threads, else the machine profile's measurement, else 8)",
    "json": "print only JSON: files, copied, skipped, failed, bytes_copied, bytes_skipped, seconds, mb_per_s",
    "dry_run": "list both sides and say what would be copied; copy nothing",
    "name": "fleet name (default: fleet.name): with a head instance the shared root is on it",
    "provider": "local, gcp or aws (default: fleet.provider)",
}


@task(auto_shortflags=False, help={"from": "a local folder, s3://bucket/prefix or gs://bucket/prefix",
            "to": "a folder relative to shared.root (default: job.src, where `invoke run` reads)", **HELP})
def push(c, from_="", to="", threads=0, json_=False, dry_run=False, name="", provider=""):
    """Copy inputs into the shared root; what is there is skipped, a rerun resumes."""
    threads = int(threads) or default_threads(c)
    src = _outside(c, "--from", from_, threads)
    if not src.exists():
        raise Exit(f"--from {from_}: nothing there (no such folder, or an empty prefix)")
    dst = _side(c, "--to", setting(c, "job.src", to), name, provider)
    _run(c, src, dst, threads, json_, bool(dry_run or c.config.run.dry))


@task(auto_shortflags=False, help={"from": "a folder relative to shared.root (default: job.dst, where `invoke run` writes)",
            "to": "a local folder, s3://bucket/prefix or gs://bucket/prefix", **HELP})
def pull(c, from_="", to="", threads=0, json_=False, dry_run=False, name="", provider=""):
    """Copy results out of the shared root; what is there is skipped, a rerun resumes."""
    threads = int(threads) or default_threads(c)
    dst = _outside(c, "--to", to, threads)
    src = _side(c, "--from", setting(c, "job.dst", from_), name, provider)
    if not src.exists():
        raise Exit(f"--from {setting(c, 'job.dst', from_)}: no such folder in the shared root ({src.label})")
    started = time.time()
    out = _run(c, src, dst, threads, json_, bool(dry_run or c.config.run.dry))
    if not out["dry_run"] and getattr(src, "head", None) is not None:   # outputs on a head instance: now safe
        keep.record_pull(src.head, src.rel, started, out["to"], out["files"])


@task(auto_shortflags=False, help={
    "name": "fleet name (default: fleet.name)",
    "provider": "gcp or aws (default: fleet.provider)",
    "dry_run": "say what would be deleted (the head instance, its disk, the outputs on it) and delete nothing",
    "yes": "confirm: delete the kept head instance and its disk, with every file of the shared root on it",
})
def drop(c, name="", provider="", dry_run=False, yes=False):
    """Delete the head instance `fleet.down` kept, and its disk with the shared root: --yes to confirm."""
    fleet = fleet_name(c, name)
    prov = provider_of(c, provider)
    if not supports(prov, "head_node"):
        raise Exit(f"a {prov.name} fleet keeps nothing in a cloud: its shared root is {c.config.shared.root} on "
                   "this machine (delete what you no longer need there yourself)")
    with user_errors():
        head = prov.head_node(c, fleet)
        nodes = [n for n in prov.list_nodes(c, fleet) if n.state != TERMINATED]
    if head is None:
        raise Exit(f"fleet {fleet} has no head instance on {prov.name}: nothing kept to drop")
    if nodes:
        raise Exit(f"fleet {fleet} still has {len(nodes)} node(s) ({', '.join(n.name for n in nodes)}): "
                   f"`invoke fleet.down --provider {prov.name} --name {fleet}` first (it keeps the head until its "
                   "outputs are pulled); data.drop deletes only what fleet.down kept")
    with user_errors():
        verdict = keep.check(c, prov, fleet)
    cost = keep.monthly_cost(c, prov.name)
    what = (f"the head instance {head.name} ({head.state}) and its disk ({cost}), with the shared root on it: "
            + (keep.describe(verdict) if verdict.unpulled or not verdict.running else
               "every run's outputs were pulled since it ended"))
    if bool(dry_run or c.config.run.dry):
        console.print(f"[dry run] data.drop would delete {what}", markup=False)
        with user_errors():
            prov.terminate(c, fleet, dry_run=True)
        return
    if not yes:
        raise Exit(f"data.drop deletes {what}; nothing brings it back. Pull what you need first (`invoke data.pull "
                   f"--provider {prov.name} --name {fleet} --from out --to ./results`), then confirm with --yes")
    with user_errors():
        removed = prov.terminate(c, fleet)
    head_instance.forget(c, prov.name, fleet)
    console.print(f"fleet {fleet}: deleted the head instance {head.name} and its disk ({removed} instance(s) "
                  "removed); nothing of the fleet is left in the cloud", markup=False)
