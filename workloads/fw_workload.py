"""fw_workload: the Workload API: the base classes a workload subclasses, its command line, and finding the
workloads of this folder by name (``available``, ``load``).  Standard library only.
"""
from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import sys

from fw_errors import UsageError
from fw_inputs import list_files

HERE = os.path.dirname(os.path.abspath(__file__))


class Workload:
    """Base class of a workload.  Subclasses set ``name`` and ``description`` and override ``list_items``,
    ``output_for`` and ``process``; ``add_arguments`` adds their own options; ``handle`` may take over the
    run for a special mode (e.g. ``--summarize``) by returning an exit code."""

    name = "workload"
    description = ""
    epilog = ""
    needs_src = True               # gridsearch: False (--src optional)
    item_seconds_hint: float | None = None   # known cost per item, skips the measurement for the chunk size

    def __init__(self, name: str | None = None, **attrs):
        if name:
            self.name = name
        for k, v in attrs.items():
            setattr(self, k, v)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"

    # ---- command line
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the workload's own options."""

    def parser(self) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(
            prog=f"{self.name}.py", description=self.description,
            epilog=(self.epilog + "\n\n" if self.epilog else "") + COMMON_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        g = p.add_argument_group("common fleetbook options")
        g.add_argument("--src", required=self.needs_src, default=None,
                       help="input folder (items are listed from it)" + ("" if self.needs_src else " (unused)"))
        g.add_argument("--dst", required=True, help="output folder (created if missing)")
        g.add_argument("--shard", metavar="i/n", default=None,
                       help="do the items with sha1(item) %% n == i first (0-based), then help with the rest")
        g.add_argument("--workers", type=int, default=None,
                       help="worker processes (default: this machine's cores: $FLEETBOOK_CORES, else the CPUs "
                            "this process may use)")
        g.add_argument("--threads", type=int, default=1,
                       help="items at once in each worker process, on threads: for items that wait on the "
                            "network (s3:// paths, a slow mount); 1 = none")
        g.add_argument("--chunksize", type=int, default=None,
                       help="items per pool task (default: chosen from the measured time per item)")
        g.add_argument("--start-method", choices=multiprocessing.get_all_start_methods(), default=None,
                       help="process start method (default: the profile's 'start_method' when the profile was "
                            "measured on this kind of machine, else fork)")
        g.add_argument("--state", metavar="DIR", default=None,
                       help="write DIR/heartbeat.json every ~2 s and DIR/exit.json at the end")
        g.add_argument("--node", default=None, help="node name for records and heartbeats (default: hostname)")
        g.add_argument("--retry-failed", action="store_true",
                       help="retry items that have a failure record in DST/.failed/")
        g.add_argument("--follow-links", action="store_true",
                       help="read source files through symlinks that lead outside --src (default: such an item "
                            "is recorded as failed, symlink-outside-src)")
        g.add_argument("--seed", type=int, default=0,
                       help="seed for workloads that draw random numbers (gridsearch: random_state)")
        g.add_argument("--quiet", action="store_true", help="no progress bar and no config line")
        own = p.add_argument_group(f"{self.name} options")
        self.add_arguments(own)
        return p

    def parse_args(self, argv: list[str] | None) -> argparse.Namespace:
        return self.parser().parse_args(argv)

    def handle(self, opts) -> int | None:
        """Return an exit code to replace the normal run (special modes), or None."""
        return None

    def check(self, src: str | None, dst: str, opts) -> None:
        """Raise UsageError when the run cannot proceed (called before listing)."""
        if self.needs_src:
            if not src or not os.path.isdir(src):
                raise UsageError(f"source folder not found: {src}")
            rs, rd = os.path.realpath(src), os.path.realpath(dst)
            if rd == rs or rd.startswith(rs.rstrip(os.sep) + os.sep):
                raise UsageError(f"--dst must not be --src or inside it ({dst})")

    def setup_worker(self, opts) -> None:
        """Called once in each worker process (e.g. to cap library threads)."""

    # ---- items
    def list_items(self, src: str, opts) -> list[str]:
        raise NotImplementedError

    def source_files(self, item: str, opts) -> list[str]:
        """The files below --src that ``process`` reads for ``item`` (checked for links out of --src first)."""
        return []

    def output_for(self, item: str, opts) -> str:
        raise NotImplementedError

    def process(self, item: str, src: str, dst: str, opts) -> None:
        raise NotImplementedError


class FileWorkload(Workload):
    """A workload whose items are files under --src selected by extension, each with one output file."""

    extensions: tuple[str, ...] = ()
    out_ext = ".out"

    def list_items(self, src: str, opts) -> list[str]:
        return list_files(src, self.extensions)

    def output_for(self, item: str, opts) -> str:
        return os.path.splitext(item)[0] + self.out_ext

    def source_files(self, item: str, opts) -> list[str]:
        return [item]


COMMON_EPILOG = """\
runner behaviour (all workloads):
  outputs already in DST are found with one directory walk and skipped; each output is written to a temp file
  in its folder and renamed; a bad input is recorded once in DST/.failed/<hash>.json (skipped next time unless
  --retry-failed).  Exit 0 = every item done or recorded as failed, 2 = cannot start.  The last line on stdout
  is: done=N skipped=N failed=N seconds=S items_per_s=R.  --workers defaults to this machine's cores
  ($FLEETBOOK_CORES, else its CPUs); --start-method and --chunksize to the machine profile ($FLEETBOOK_PROFILE,
  profile.json beside this script, or <repo>/.fleetbook/profile.json) when it was measured on as many cores."""


def available() -> list[str]:
    """Names of the workloads in this folder: the modules that assign a top-level ``WORKLOAD`` (helpers such as
    fleetwork, its fw_*.py modules or storage.py are not workloads).  Reads the small source files; imports
    nothing."""
    names = []
    for entry in os.scandir(HERE):
        stem, ext = os.path.splitext(entry.name)
        if ext != ".py" or not stem.isidentifier() or stem.startswith(("_", "fw_")) or stem == "fleetwork":
            continue
        try:
            with open(entry.path, encoding="utf-8", errors="replace") as f:
                if any(line.startswith(("WORKLOAD =", "WORKLOAD:")) for line in f):
                    names.append(stem)
        except OSError:
            continue
    return sorted(names)


def load(name: str) -> Workload:
    """Import ``workloads/<name>.py`` and return its ``WORKLOAD``; unknown name -> KeyError."""
    names = available()
    if name not in names:
        raise KeyError(f"unknown workload {name!r}; available: {', '.join(names) or 'none'}")
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    mod = sys.modules.get(name)
    if mod is None or os.path.dirname(os.path.abspath(getattr(mod, "__file__", "") or "")) != HERE:
        spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, name + ".py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    workload = getattr(mod, "WORKLOAD", None)
    if workload is None:
        raise ValueError(f"workloads/{name}.py defines no WORKLOAD")
    return workload
