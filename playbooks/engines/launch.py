"""Checks before any engine starts a run: the workload and its arguments (on the head), the nodes (mounted and
deployed).  One copy for the local engine (``invoke run``), Dask (``dask.up``) and the planner."""
from __future__ import annotations

import shlex

from rich.console import Console

from playbooks.engines.errors import EngineError
from playbooks.runs import state as runstate
from playbooks.settings import setting
from playbooks.ssh.fanout import fan_out, q, run_checked, show_failures

console = Console()


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


def mount_answers(mp: str) -> str:
    """Shell test: the mount at ``mp`` (already quoted) answers: listed is not enough, a dead sshfs stays listed
    while every call on it fails with "Transport endpoint is not connected".  ``stat -f`` (statfs) goes to the
    server every time; bounded, since a mount whose link is down hangs until its keep-alives give up."""
    return f"timeout 10 stat -f {mp} >/dev/null 2>&1"


def preflight(c, name, nodes, workload, repair=None):
    """Every node has the shared disk mounted and the workload deployed, or a one-line error.  A mount that is
    listed but dead (its sshfs died or gave up) is repaired first when the caller gives ``repair`` (nodes ->
    HostResults: lazy unmount, mount again, as ``invoke mount`` does; `invoke run` passes it), else named."""
    timeout = setting(c, "fleet.ssh_timeout")
    check = ("{mounted} || {{ echo no-mount; exit 0; }}; {answers} || {{ echo dead-mount; exit 0; }}; "
             "test -f {wd}/workloads/{w}.py || echo no-deploy")
    results = fan_out(c, name, nodes, lambda conn, n: run_checked(conn, check.format(
        mounted=is_mounted(q(n.mountpoint)), answers=mount_answers(q(n.mountpoint)), wd=q(n.workdir),
        w=q(workload)), timeout).strip(), step="preflight")
    if show_failures(results):
        raise EngineError("some nodes did not answer (see the table above): check `invoke fleet.list`")
    dead = [r.node for r in results if r.value == "dead-mount"]
    if dead and repair is not None:
        console.print(f"preflight: the shared disk's mount is dead on {', '.join(n.name for n in dead)} "
                      "(listed, but it does not answer): remounting it", markup=False)
        fixed = repair(dead)
        if show_failures(fixed):
            raise EngineError(f"the dead mount on {', '.join(r.node.name for r in fixed if not r.ok)} could not "
                              "be repaired (see the table above): `invoke unmount` then `invoke mount`")
        return preflight(c, name, nodes, workload)
    for problem, fix in (("dead-mount", "invoke unmount` then `invoke mount"), ("no-mount", "invoke mount"),
                         ("no-deploy", "invoke deploy")):
        bad = [r.node.name for r in results if r.value == problem]
        if bad:
            raise EngineError(f"{problem.replace('no-', 'no ').replace('-', ' ')} on {', '.join(bad)}: "
                              f"run `{fix}` first")


def local_state(run_id: str) -> str:
    """The run's folder on the node's own disk, relative to its workdir: the node's last words (log, exit file,
    ``health.json``), which the head reads over SSH when the shared disk's mount is gone."""
    return f".runs/{run_id}"


def node_command(node, record: dict, shard: int, extra: list[str], workers: int | None,
                 env: dict[str, str] | None = None) -> str:
    """The shell that starts the workload detached: its log goes to the node's own disk and, while the mount
    answers, to the shared one (``tee``, which goes on with the local copy when the mount fails); its exit file
    to both; once it has ended, the local log and exit file are copied onto the shared disk where they are
    missing (a mount that came back), each into place by a rename: a reader (``progress``, the head's last look)
    never sees one half copied (a plain ``cp`` over the log left it empty for a moment)."""
    mp = node.mountpoint
    state = f"{mp}/{runstate.node_state_rel(record['run_id'], node.name)}"
    local = local_state(record["run_id"])
    argv = [node.python, "workloads/" + record["workload"] + ".py", "--src", data_path(mp, record["src"]),
            "--dst", data_path(mp, record["dst"]), "--shard", f"{shard}/{record.get('shards') or len(record['nodes'])}",
            "--state", state, "--node", node.name]
    if workers and "--workers" not in extra:
        argv += ["--workers", str(workers)]
    argv += extra
    # the exit file is written by the workload; if it dies before that, the shell writes the code
    lx, sx, ll, sl, sx_part, sl_part = (q(f"{d}/{f}") for d, f in (
        (local, "exit.json"), (state, "exit.json"), (local, "log.txt"), (state, "log.txt"),
        (state, ".exit.json.part"), (state, ".log.txt.part")))
    # tee ignores the stop signals: it must outlive the workload's last words (its summary, its exit file)
    inner = (f"{{ {shlex.join(argv)}; echo $? > {q(local + '/rc')}; }} 2>&1 | "
             f"( trap '' TERM INT HUP; exec tee -a {ll} {sl} >/dev/null ); "
             f"rc=$(cat {q(local + '/rc')} 2>/dev/null || echo 1); "
             f"[ -e {lx} ] || printf '{{\"code\": %d}}\\n' \"$rc\" > {lx}; "
             f"[ -e {sx} ] || {{ cp {lx} {sx_part} && mv -f {sx_part} {sx}; }}; "
             f"cp {ll} {sl_part} && mv -f {sl_part} {sl}; true")
    envs = " ".join(f"{k}={q(v)}" for k, v in {"FLEETBOOK_RUN": record["run_id"], "FLEETBOOK_LOCAL_STATE": local,
                                               **bucket_env(record), **(env or {})}.items())
    # only the workload goes to the background, with every fd redirected: a login shell that does not exec
    # the last command of a backgrounded list (bash) would otherwise hold the SSH channel open until it ends;
    # a replacement may have the name, hence the state folder, of the node it replaces: no old exit record
    return (f"cd {q(node.workdir)} && mkdir -p {q(state)} {q(local)} && "
            f"rm -f {lx} {sx} {q(local + '/health.json')} {q(local + '/rc')} && {{ "
            f"{envs} setsid nohup sh -c {q(inner)} "
            f">> {ll} 2>&1 < /dev/null & echo $!; }}")


def head_paths(root, record: dict) -> tuple[str, str]:
    """A run record's --src and --dst as the head checks them: below the shared root ``root``, or the buckets'
    URLs (issue 14)."""
    return tuple(p if "://" in p else str(root / p) for p in (record["src"], record["dst"]))


def data_path(mp: str, path: str) -> str:
    """Where a node finds a run's --src / --dst: below its mountpoint, or the bucket URL itself (issue 14)."""
    return path if "://" in path else f"{mp}/{path}"


def bucket_env(record: dict) -> dict[str, str]:
    """A bucket run's S3 endpoint for the node (an address; the node's credentials are its own)."""
    return {"FLEETBOOK_S3_ENDPOINT": str(record["s3_endpoint"])} if record.get("s3_endpoint") else {}
