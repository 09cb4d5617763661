"""Measure this machine before scaling out: the bench suite, then a machine profile the workloads read.

``invoke bench [--scale small|default|large]`` runs ``pytest bench -m 'not fleet'`` with ``--benchmark-json``
(the command is echoed; with ``--fleet`` there is no ``-m`` and it selects exactly what ``pytest bench/`` does,
the benchmarks marked ``fleet`` included, which start a local fleet) and turns the result into
``.fleetbook/profile.json`` (``bench.profile``), a Markdown report of headline ratios next to what the original
write-ups say (``bench-report.md``) and a chart of chunk size against throughput (``bench-chunks.png``).
Workloads read ``start_method``, ``per_task_overhead_us`` and ``cores`` from the profile (on the machine it was
measured on).  ``--from-json`` rebuilds profile, report and chart from a benchmark JSON without measuring again.
``--node NODE`` measures one fleet node instead and stores its profile per machine type (see ``bench_node``).
The profile is built in ``measure/profile.py`` (the ratios), the report in ``measure/report.py``, the chart in
``measure/chart.py``, the pytest command and its JSON in ``measure/suite.py``; this module is only the task.
"""
from __future__ import annotations

import sys
from pathlib import Path

from invoke import task
from invoke.exceptions import Exit

from playbooks import bench_node
from playbooks.measure.profile import PROFILE_VERSION, build_profile  # noqa: F401 - PROFILE_VERSION: the profile's format
from playbooks.measure.report import write_outputs
from playbooks.measure.suite import SCALES, load_benchmarks, suite_command
from playbooks.settings import setting
from playbooks.settings.defaults import REPO, profile_path
from playbooks.settings.errors import user_errors


# ----------------------------------------------------------------------------------------------------------
@task(default=True, help={
    "scale": "input sizes: small (about a minute), default (about 5 minutes), large; default: bench.scale",
    "from_json": "build profile, report and chart from this pytest-benchmark JSON instead of measuring",
    "pytest_args": "extra pytest arguments, one quoted string, e.g. '-k chunks'",
    "fleet": "also run the local-fleet benchmarks (marked `fleet`: they start sshd and sshfs)",
    "node": "benchmark this fleet node instead of this machine (start methods, chunk sizes, per-item time of "
            "each workload on a sample of --src); writes .fleetbook/profiles/<provider>-<machine type>.json",
    "name": "with --node: its fleet (default: fleet.name)",
    "provider": "with --node: local, gcp or aws (default: fleet.provider)",
    "src": "with --node: the inputs to sample, relative to shared.root, read on the node (default: job.src)",
    "sample": "with --node: how many inputs each workload is timed on (default: 8 small, 24 default, 100 large)",
})
@user_errors()
def run(c, scale=None, from_json=None, pytest_args="", fleet=False, node="", name="", provider="", src="",
        sample=0):
    """Benchmark this machine (pytest bench/), or one fleet node (--node), and write its profile."""
    scale = setting(c, "bench.scale", scale)
    if scale not in SCALES:
        raise Exit(f"--scale {scale!r}: use one of {', '.join(SCALES)} (or set bench.scale)")
    if node:
        if from_json or fleet:
            raise Exit("--node benchmarks one node: it takes neither --from-json nor --fleet")
        if int(sample) < 0:
            raise Exit("--sample must be >= 1 (or 0 for the scale's default)")
        bench_node.measure(c, node, name=name, provider=provider, scale=scale, src=src, sample=int(sample),
                           pytest_args=bench_node.quote_args(pytest_args))
        return
    if name or provider or src or sample:
        raise Exit("--name, --provider, --src and --sample go with --node NODE (this machine needs none of them)")
    out = profile_path(c)
    if from_json:
        json_file = Path(from_json).resolve()
        if not json_file.is_file():
            raise Exit(f"--from-json {from_json}: no such file; run `invoke bench` to measure")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        json_file = out.parent / f"bench-{scale}.json"
        json_file.unlink(missing_ok=True)
        with c.cd(str(REPO)):
            result = c.run(suite_command(scale, json_file, fleet, pytest_args), warn=True, pty=False, echo=True)
        if not json_file.is_file():
            raise Exit("the benchmarks wrote no JSON (see pytest's output above); fix the failure, or try "
                       "`invoke bench --scale small`")
        if result is not None and result.failed:
            print(f"warning: pytest exited {result.exited}; building the profile from what was measured",
                  file=sys.stderr)
    files = write_outputs(build_profile(load_benchmarks(json_file), source=str(json_file)), out)
    for what, path in files.items():
        print(f"{what}: {path}")
