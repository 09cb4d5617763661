"""Checks before any engine starts a run: the workload and its arguments (on the head), the nodes (mounted and
deployed).  One copy for the local engine (``invoke run``), Dask (``dask.up``) and the planner."""
from __future__ import annotations

import shlex

from playbooks.engines.errors import EngineError
from playbooks.runs import state as runstate
from playbooks.settings import setting
from playbooks.ssh.fanout import fan_out, q, run_checked, show_failures


def is_mounted(mp: str) -> str:
    """Shell test: an sshfs mount (not just any mount) sits at ``mp`` (already quoted)."""
    return f"findmnt -n -t fuse.sshfs --mountpoint {mp} >/dev/null"


def workload_opts(workload: str, src: str, dst: str, args: str):
    """Check the workload and its arguments on the head, before anything starts on a node."""
    fw = runstate.fleetwork()
    if workload not in fw.available():
        raise EngineError(f"unknown workload {workload!r}: choose one of {', '.join(fw.available())}")
    wl = fw.load(workload)
    try:
        extra = shlex.split(args)
    except ValueError as exc:
        raise EngineError(f"--args is not valid shell quoting ({exc}): pass one quoted string, "
                          f"e.g. --args '--size 64'") from None
    try:
        opts = wl.parse_args(["--src", src, "--dst", dst, *extra])
    except SystemExit:
        raise EngineError(f"--args {args!r} is not valid for {workload}: "
                          f"see python workloads/{workload}.py --help") from None
    return wl, opts, extra


def preflight(c, name, nodes, workload):
    """Every node has the shared disk mounted and the workload deployed, or a one-line error."""
    timeout = setting(c, "fleet.ssh_timeout")
    check = "{mounted} || {{ echo no-mount; exit 0; }}; test -f {wd}/workloads/{w}.py || echo no-deploy"
    results = fan_out(c, name, nodes, lambda conn, n: run_checked(conn, check.format(
        mounted=is_mounted(q(n.mountpoint)), wd=q(n.workdir), w=q(workload)), timeout).strip(), step="preflight")
    if show_failures(results):
        raise EngineError("some nodes did not answer (see the table above): check `invoke fleet.list`")
    for problem, fix in (("no-mount", "invoke mount"), ("no-deploy", "invoke deploy")):
        bad = [r.node.name for r in results if r.value == problem]
        if bad:
            raise EngineError(f"{problem.replace('no-', 'no ')} on {', '.join(bad)}: run `{fix}` first")
