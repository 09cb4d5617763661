"""User mistakes end with one line that says what to do, a non-zero exit, no traceback, nothing half-made."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from tests.support.fleet import fleet_processes, invoke_cli

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(300)]
NAME = "err" + secrets.token_hex(2)


def one_line_error(result, *words):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    text = (result.stderr + result.stdout).strip()
    for w in words:
        assert w in text, text
    return text


def test_help_lists_every_task_with_one_line(fleet_base):
    result = invoke_cli(fleet_base, "--list")
    assert result.returncode == 0
    for t in ("fleet.create", "fleet.list", "fleet.down", "mount", "unmount", "deploy", "run", "progress",
              "teardown", "demo"):
        assert t in result.stdout
    helped = invoke_cli(fleet_base, "--help", "fleet.create")
    assert "-n INT" in helped.stdout and "--dry-run" in helped.stdout and "--no-wait" in helped.stdout


@pytest.mark.parametrize("flag", ["--n", "-n"])
def test_n_works_with_one_and_two_dashes(fleet_base, flag):
    result = invoke_cli(fleet_base, "fleet.create", flag, "5", "--name", NAME, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would create 5" in result.stdout
    assert not (fleet_base / "state" / NAME).exists()  # a dry run creates nothing


def test_bad_fleet_name(fleet_base):
    one_line_error(invoke_cli(fleet_base, "fleet.create", "-n", "1", "--name", "Bad_Name"), "not valid")


def test_no_count(fleet_base):
    one_line_error(invoke_cli(fleet_base, "fleet.create"), "-n 3")


def test_unknown_provider(fleet_base):
    one_line_error(invoke_cli(fleet_base, "fleet.list", "--provider", "azure"), "local, gcp, aws")


def test_no_fleet(fleet_base):
    for task in (["mount"], ["deploy"], ["run", "--workload", "resize"]):
        one_line_error(invoke_cli(fleet_base, *task, "--name", "nosuchfleet"), "fleet.create")


def test_no_run_yet(fleet_base):
    one_line_error(invoke_cli(fleet_base, "progress"), "invoke run")


def test_run_errors_on_a_fleet(fleet_base):
    """Unknown workload, missing source, bad --args, no mount, no deploy: each its own line."""
    created = invoke_cli(fleet_base, "fleet.create", "-n", "1", "--name", NAME)
    assert created.returncode == 0, created.stderr
    try:
        one_line_error(invoke_cli(fleet_base, "run", "--workload", "nope", "--name", NAME), "unknown workload", "resize")
        one_line_error(invoke_cli(fleet_base, "run", "--workload", "resize", "--src", "missing", "--name", NAME),
                       "does not exist")
        (fleet_base / "data" / "src").mkdir(parents=True, exist_ok=True)
        one_line_error(invoke_cli(fleet_base, "run", "--workload", "resize", "--args", "--size", "--name", NAME),
                       "not valid")
        one_line_error(invoke_cli(fleet_base, "run", "--workload", "resize", "--name", NAME), "invoke mount")
        m = invoke_cli(fleet_base, "mount", "--name", NAME); assert m.returncode == 0, m.stdout + m.stderr
        one_line_error(invoke_cli(fleet_base, "run", "--workload", "resize", "--name", NAME), "invoke deploy")
        assert not list((fleet_base / "data").glob(".fleetbook/runs/*"))  # no run record was left behind
    finally:
        down = invoke_cli(fleet_base, "teardown", "--name", NAME)
        assert down.returncode == 0, down.stderr
    assert fleet_processes(NAME) == []
    again = invoke_cli(fleet_base, "fleet.down", "--name", NAME)
    assert again.returncode == 0 and "nothing to remove" in again.stdout
    assert not Path(fleet_base / "state" / NAME).exists()


@pytest.mark.parametrize("root, words", [
    ("{base}", "keys"),                      # would hand the nodes the fleet's keys (the state folder is inside)
    ("{base}/data/file.txt", "not a folder"),
    ("/", "keys"),
])
def test_unservable_shared_root_is_refused_before_any_node_starts(fleet_base, root, words):
    (fleet_base / "data").mkdir(exist_ok=True)
    (fleet_base / "data" / "file.txt").write_text("x")
    name = "sr" + secrets.token_hex(2)
    result = invoke_cli(fleet_base, "fleet.create", "-n", "1", "--name", name,
                        env={"INVOKE_SHARED_ROOT": root.format(base=fleet_base)})
    one_line_error(result, "shared.root", words)
    assert not (fleet_base / "state" / name).exists() and fleet_processes(name) == []


def test_hostile_mountpoint_is_refused_and_runs_nothing(fleet_base, tmp_path):
    canary = tmp_path / "pwned"
    name = "mp" + secrets.token_hex(2)
    result = invoke_cli(fleet_base, "fleet.create", "-n", "1", "--name", name,
                        env={"INVOKE_SHARED_MOUNTPOINT": f"/mnt/x;touch {canary};:", "INVOKE_LOCAL_ISOLATION": "auto"})
    if result.returncode == 0:  # without root the mountpoint is each node's own folder: the setting is not used
        assert os.geteuid() != 0
        invoke_cli(fleet_base, "fleet.down", "--name", name)
    else:
        one_line_error(result, "shared.mountpoint", "absolute path")
    assert not canary.exists()
    assert fleet_processes(name) == [] and not (fleet_base / "state" / name).exists()
