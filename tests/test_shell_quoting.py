"""Every value that reaches a shell command (settings such as shared.mountpoint, node labels: home, workdir,
python, names; run arguments) is quoted: each command the runbook builds is run for real by ``sh`` with hostile
values in every such place, and the canary file that an injection would create must never appear."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from playbooks import mount, run, shell
from playbooks.engines import dask as dask_engine
from playbooks.ssh.sftp_head import Head
from playbooks.providers import Node, local
from playbooks.providers import cloud as cloud_common

TRICKS = ["x;touch {c};:", "x$(touch {c})", "x`touch {c}`", "x' ; touch {c}; '", 'x" && touch {c} && "',
          "x\ntouch {c}\n", "x|touch {c}", "x&touch {c}&"]


def commands(base: Path, trick: str) -> list[str]:
    hostile = f"{base}/{trick}"
    node = Node(name=f"n{trick}", host="127.0.0.1", port=1, user="nobody", mountpoint=hostile, python=hostile,
                workdir=hostile, labels={"home": hostile})
    head = Head(host="127.0.0.1", port=1, user=trick, remote_path=hostile)
    record = {"run_id": trick, "workload": trick, "src": trick, "dst": trick, "nodes": [{"name": node.name}]}
    return [
        mount.mount_command(node, head),
        mount.unmount_command(node),
        run.node_command(node, record, 0, [hostile, "--size", trick], 1),
        dask_engine.worker_command(node, f"tcp://127.0.0.1:1/{trick}", 1, 1, True),
        cloud_common.startup_script(None, hostile),
        shell.bounded(shell.in_workdir(node, "true"), 5),  # exec: the user's own text is meant to run, the rest not
        # a node's namespace set-up, run outside any namespace here: its mounts fail, an injection would not
        local.namespace_setup(hostile, 65534, 65534, hostile).replace('exec "$0" "$@"', "true"),
    ]


@pytest.mark.parametrize("trick", TRICKS)
def test_no_value_escapes_its_quotes(tmp_path, trick):
    canary = tmp_path / "canary"
    trick = trick.format(c=canary)
    for cmd in commands(tmp_path, trick):
        (tmp_path / trick.split("/")[0]).mkdir(exist_ok=True)  # let `cd` succeed, so more of each command runs
        sandbox = ["unshare", "--mount", "--propagation", "private", "--"] if os.geteuid() == 0 else []
        subprocess.run([*sandbox, "sh", "-c", cmd], cwd=tmp_path, capture_output=True, timeout=30,  # no mount leaks
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path)})
    time.sleep(0.5)  # node_command starts its workload in the background
    assert not canary.exists(), f"an injected command ran: {trick!r}"
