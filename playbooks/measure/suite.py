"""The bench suite as ``invoke bench`` runs it: the pytest command (``--benchmark-json``) and the JSON it wrote."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from playbooks.settings.errors import FleetbookError

SCALES = ("small", "default", "large")


class MeasureError(FleetbookError):
    """A benchmark that cannot be read or was not written (one line, with what to do)."""


def suite_command(scale: str, json_file: Path, fleet: bool, pytest_args: str = "") -> str:
    """``pytest bench`` at ``scale`` writing ``json_file``; without ``fleet`` the local-fleet benchmarks are left out
    (with it there is no ``-m``: exactly what ``pytest bench/`` selects)."""
    marks = "" if fleet else "-m 'not fleet' "
    return (f"{shlex.quote(sys.executable)} -m pytest bench -p no:cacheprovider {marks}"
            f"--bench-scale {scale} --benchmark-json {shlex.quote(str(json_file))} "
            f"--benchmark-columns median,rounds --benchmark-sort name {pytest_args}").strip()


def load_benchmarks(json_file: Path) -> dict:
    """The pytest-benchmark JSON in ``json_file``, with at least one benchmark."""
    try:
        data = json.loads(json_file.read_text())
    except ValueError as e:
        raise MeasureError(f"{json_file} is not a benchmark JSON ({e}); run `invoke bench` again") from None
    if not data.get("benchmarks"):
        raise MeasureError(f"{json_file} holds no benchmarks (was the run made with --benchmark-disable?)")
    return data
