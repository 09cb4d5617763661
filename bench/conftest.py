"""Shared set-up for the benchmark suite.

One knob, the scale: ``--bench-scale small|default|large`` (or ``FLEETBOOK_BENCH_SCALE``; the option wins).
``small`` is what CI runs with ``--benchmark-disable`` (every benchmark once, fast); ``default`` is a run of a
few minutes on 2 cores; ``large`` reproduces the full-size figures of the write-ups.

A benchmark asks for its sizes with ``sized(small=..., default=..., large=...)`` (a fixture) and for the scale
itself with ``bench_scale``.  Timings on a shared 2-core machine are noisy: compare benchmarks of one run
(ratios), never absolute times.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

WORKLOADS = Path(__file__).resolve().parent.parent / "workloads"
if str(WORKLOADS) not in sys.path:
    sys.path.insert(0, str(WORKLOADS))

import fleetwork  # noqa: E402

SCALES = ("small", "default", "large")
ENV = "FLEETBOOK_BENCH_SCALE"


def pytest_addoption(parser):
    parser.addoption(
        "--bench-scale", choices=SCALES, default=None,
        help=f"size of the benchmark inputs: small (CI), default (minutes), large (the write-ups); env {ENV}",
    )
    parser.addoption(
        "--bench-src", default=None, metavar="DIR",
        help="bench/test_items.py: time the workloads on a sample of the images in DIR (the job's real inputs; "
             "`invoke bench --node` passes the node's view of the shared disk) instead of generated photos",
    )
    parser.addoption(
        "--bench-sample", type=int, default=0, metavar="N",
        help="bench/test_items.py: how many inputs to sample (default: 8 small, 24 default, 100 large)",
    )


def _scale(config) -> str:
    value = config.getoption("--bench-scale") or os.environ.get(ENV) or "default"
    if value not in SCALES:
        raise pytest.UsageError(f"{ENV}={value!r}: use one of {', '.join(SCALES)}")
    return value


def cores() -> int:
    """The cores this machine counts as its own, by the workloads' own rule (``fleetwork.machine_cores``):
    ``$FLEETBOOK_CORES`` (a local fleet node counts ``local.cores_per_node``), else the CPUs this process may
    run on (affinity), which is what a pool can use."""
    return fleetwork.machine_cores()


def pytest_report_header(config):
    return f"fleetbook bench: scale={_scale(config)} cores={cores()}"


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what the machine profile needs next to pytest-benchmark's own machine info."""
    machine_info["fleetbook"] = {"scale": _scale(config), "cores": cores(), "cpus": os.cpu_count(),
                                 "cpu_model": _cpu_model(), "memory_bytes": _memory_bytes(),
                                 "load_average_1m": round(os.getloadavg()[0], 2)}  # at the end of the run


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    import platform

    return platform.processor() or platform.machine()


@pytest.fixture(scope="session")
def bench_scale(pytestconfig) -> str:
    """``small``, ``default`` or ``large``."""
    return _scale(pytestconfig)


@pytest.fixture(scope="session")
def sized(bench_scale):
    """Pick a size for the current scale: ``sized(small=2_000, default=200_000)`` (large defaults to default)."""

    def pick(*, small, default, large=None):
        return {"small": small, "default": default, "large": default if large is None else large}[bench_scale]

    return pick


@pytest.fixture(scope="session")
def bench_src(pytestconfig) -> Path | None:
    """``--bench-src DIR`` as a Path (checked), or None: generated inputs."""
    value = pytestconfig.getoption("--bench-src")
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        raise pytest.UsageError(f"--bench-src {value}: no such folder")
    return path


@pytest.fixture(scope="session")
def sample_size(pytestconfig, sized) -> int:
    """``--bench-sample N``, else 8 / 24 / 100 by scale."""
    n = pytestconfig.getoption("--bench-sample") or sized(small=8, default=24, large=100)
    if n < 1:
        raise pytest.UsageError("--bench-sample must be >= 1")
    return n


@pytest.fixture(scope="session")
def n_workers() -> int:
    """Pool size used throughout: one worker per usable core, at least 2 so that a pool is a pool."""
    return max(2, cores())


class Pools:
    """Build a pool in pedantic's ``setup`` and shut it down in ``teardown``, both outside the timed part.

    ``--benchmark-disable`` skips ``teardown``: whatever is still open is shut down when the test ends.
    """

    def __init__(self):
        self.live = []

    def setup(self, make, warm=None):
        def _setup():
            pool = make()
            self.live.append(pool)
            if warm is not None:
                warm(pool)
            return (pool,), {}

        return _setup

    def teardown(self, pool):
        if pool in self.live:
            self.live.remove(pool)
        _close(pool)

    def close(self):
        while self.live:
            _close(self.live.pop())


def _close(pool):
    if hasattr(pool, "terminate"):  # multiprocessing.Pool
        pool.terminate()
        pool.join()
    else:  # concurrent.futures executors
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def pools():
    """See :class:`Pools`."""
    p = Pools()
    yield p
    p.close()
