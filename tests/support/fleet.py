"""Fixtures for tests on a real local fleet: Invoke contexts with their own state and shared root, sample images.

The state folder and the shared root sit below pytest's tmp_path (under /tmp, in a folder closed to others),
as root and without: the head's sshd and the nodes must work wherever a user keeps them.
tests/conftest.py makes ``fleet_base`` available to every test module; import the helpers by name.
"""
from __future__ import annotations

import copy
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Config, Context

from playbooks.settings.defaults import DEFAULTS, REPO

__all__ = ["make_ctx", "fleet_base", "ROOT", "INVOKE", "invoke_cli", "fleet_processes", "cmdline", "outputs",
           "check_resized"]

ROOT = os.geteuid() == 0
INVOKE = str(Path(sys.executable).with_name("invoke"))


def make_ctx(base: Path, **settings) -> Context:
    """A Context with the project's defaults, its state and shared disk below ``base``, and ``settings``."""
    defaults = copy.deepcopy(DEFAULTS)
    defaults["fleet"]["state_dir"] = str(base / "state")
    defaults["shared"]["root"] = str(base / "data")
    defaults["fleet"]["ready_timeout"] = 30.0
    for dotted, value in settings.items():
        sub, key = dotted.split("__")
        defaults[sub][key] = value
    cfg = Config(overrides={"run": {"hide": True}})
    cfg.load_collection(defaults)
    return Context(config=cfg)


@pytest.fixture(scope="module")
def fleet_base(tmp_path_factory):
    """State and shared root below pytest's own temporary folder, which is closed to other users (0700) and
    below /tmp: the two places where newcomers clone, so every fleet test runs there."""
    base = tmp_path_factory.mktemp("fleet")
    yield base
    shutil.rmtree(base, ignore_errors=True)



def bench_base(tmp_path_factory, prefix: str) -> Path:
    """A bench fleet's folder: as root below root-owned /var/lib (the head's sshd chroots into the shared root),
    else pytest's own temporary folder."""
    if os.geteuid() == 0:
        base = Path("/var/lib/fleetbook-tests") / secrets.token_hex(4)
        base.mkdir(parents=True)
        return base
    return tmp_path_factory.mktemp(prefix)


def sampled_ctx(base: Path, name: str, images: int, size: tuple[int, int], **settings):
    """A fixture's body: a Context (``make_ctx``) with ``images`` sample JPEGs of ``size`` in <shared root>/src;
    fleet ``name`` is torn down afterwards.  Use as ``yield from sampled_ctx(...)``."""
    from playbooks import teardown
    from playbooks.runs.samples import make_samples
    c = make_ctx(base, **settings)
    make_samples(base / "data" / "src", images, size=size)
    try:
        yield c
    finally:
        teardown.teardown(c, name=name)


def bring_up(c, name: str, n: int) -> Context:
    """A real local fleet of ``n`` nodes, mounted and deployed: what every end-to-end test starts from."""
    from playbooks import deploy, fleet, mount
    fleet.create(c, n=n, name=name)
    mount.mount(c, name=name)
    deploy.deploy(c, name=name)
    return c

def invoke_cli(base: Path, *args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `invoke` command of the repository, as a user would, against ``base`` (``env`` on top)."""
    env = {**os.environ, "INVOKE_FLEET_STATE_DIR": str(base / "state"), "INVOKE_SHARED_ROOT": str(base / "data"),
           "COLUMNS": "200", **(env or {})}
    return subprocess.run([INVOKE, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def fleet_processes(fleet: str) -> list[str]:
    """Command lines of every process that still belongs to the fleet (its daemons, mounts or workloads)."""
    import psutil
    found = []
    for proc in psutil.process_iter(["cmdline", "username"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            env = proc.environ().get("FLEETBOOK_NODE", "")
            if env.startswith(fleet + "/") or f"/{fleet}/" in cmd or (proc.info["username"] or "").startswith(
                    f"fb-{fleet}-"):
                found.append(f"{proc.pid} {cmd}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def cmdline(proc) -> str:
    """A process's command line, or "" when it has just ended (a zombie has none)."""
    import psutil
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def outputs(c, dst: str = "out") -> dict:
    """Every file below <shared root>/<dst> but the failure records; dot-files too, so that leftovers show."""
    root = Path(c.config.shared.root) / dst
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file() and ".failed" not in p.parts}


def check_resized(c, dst: str = "out", size: int = 128) -> dict:
    """The outputs of resize over <shared root>/src: exactly one valid ``size`` square JPEG per input, no more."""
    from PIL import Image
    outs = outputs(c, dst)
    src = Path(c.config.shared.root) / "src"
    expected = {p.relative_to(src).with_suffix(".jpg").as_posix() for p in src.rglob("*.jpg")}
    assert set(outs) == expected, f"missing {sorted(expected - set(outs))[:5]} extra {sorted(set(outs) - expected)[:5]}"
    for path in outs.values():
        with Image.open(path) as img:
            img.load()
            assert img.size == (size, size) and img.format == "JPEG"
    return outs
