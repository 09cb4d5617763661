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


def node_command(node, record: dict, shard: int, extra: list[str], workers: int | None,
                 env: dict[str, str] | None = None) -> str:
    mp = node.mountpoint
    state = f"{mp}/{runstate.node_state_rel(record['run_id'], node.name)}"
    argv = [node.python, "workloads/" + record["workload"] + ".py", "--src", data_path(mp, record["src"]),
            "--dst", data_path(mp, record["dst"]), "--shard", f"{shard}/{record.get('shards') or len(record['nodes'])}",
            "--state", state, "--node", node.name]
    if workers and "--workers" not in extra:
        argv += ["--workers", str(workers)]
    argv += extra
    # the exit file is written by the workload; if it dies before that, the shell writes the code
    inner = (f"{shlex.join(argv)}; rc=$?; [ -e {q(state + '/exit.json')} ] || "
             f"printf '{{\"code\": %d}}\\n' \"$rc\" > {q(state + '/exit.json')}")
    envs = " ".join(f"{k}={q(v)}" for k, v in {"FLEETBOOK_RUN": record["run_id"], **bucket_env(record),
                                                 **(env or {})}.items())
    # only the workload goes to the background, with every fd redirected: a login shell that does not exec
    # the last command of a backgrounded list (bash) would otherwise hold the SSH channel open until it ends;
    # a replacement may have the name, hence the state folder, of the node it replaces: no old exit record
    return (f"cd {q(node.workdir)} && mkdir -p {q(state)} && rm -f {q(state + '/exit.json')} && {{ "
            f"{envs} setsid nohup sh -c {q(inner)} "
            f"> {q(state + '/log.txt')} 2>&1 < /dev/null & echo $!; }}")


def data_path(mp: str, path: str) -> str:
    """Where a node finds a run's --src / --dst: below its mountpoint, or the bucket URL itself (issue 14)."""
    return path if "://" in path else f"{mp}/{path}"


def bucket_env(record: dict) -> dict[str, str]:
    """A bucket run's S3 endpoint for the node (an address; the node's credentials are its own)."""
    return {"FLEETBOOK_S3_ENDPOINT": str(record["s3_endpoint"])} if record.get("s3_endpoint") else {}
