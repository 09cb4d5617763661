"""The whole runbook on a small local fleet, each step printed: the first thing to try."""
from __future__ import annotations

import time

from invoke import task
from invoke.exceptions import Exit
from rich.console import Console
from rich.rule import Rule

from playbooks import deploy as deploy_tasks
from playbooks import fleet as fleet_tasks
from playbooks import mount as mount_tasks
from playbooks import progress as progress_tasks
from playbooks import run as run_tasks
from playbooks.runs import state as runstate
from playbooks import teardown as teardown_tasks
from playbooks.settings.defaults import shared_root
from playbooks.settings.errors import user_errors
from playbooks.runs.samples import make_samples

console = Console()


def step(title: str) -> None:
    console.print(Rule(f"[bold]{title}"))


def prepare(c, src: str, dst: str, images: int) -> int:
    """Sample images in ``src`` and an empty ``dst`` (the demo shows the work, not a skip), both below the shared
    root and never through a symlink there (a node could have replaced the demo's folders by links)."""
    runstate.local_disk(c).rmtree(dst)
    return make_samples(shared_root(c) / src, images, root=shared_root(c))


@task(help={"n": "how many nodes (default 3)", "images": "how many sample images to make (default 60)",
            "name": "fleet name for the demo (default: demo)", "keep": "keep the fleet running afterwards"})
@user_errors()
def demo(c, n=3, images=60, name="demo", keep=False):
    """Make sample images, then create -> mount -> deploy -> run resize -> progress -> teardown."""
    src, dst = "demo/src", "demo/out"
    step(f"1/6 sample images in {shared_root(c) / src}")
    made = prepare(c, src, dst, images)
    console.print(f"{made} JPEG images ready (from the pictures scikit-image ships)")
    t0 = time.monotonic()
    try:
        step(f"2/6 invoke fleet.create -n {n} --name {name}")
        fleet_tasks.create(c, n=n, name=name)
        step("3/6 invoke mount")
        mount_tasks.mount(c, name=name)
        step("4/6 invoke deploy")
        deploy_tasks.deploy(c, name=name)
        step("5/6 invoke run --workload resize --wait")
        _, nodes = fleet_tasks.nodes_or_exit(c, name)
        record = run_tasks.start(c, name, nodes, "resize", src, dst, "--size 128")
        snap = progress_tasks.wait_until_finished(c, record)
    finally:
        if not keep:
            step(f"6/6 invoke teardown --name {name}")
            teardown_tasks.teardown(c, name=name)
    seconds = time.monotonic() - t0
    run_s = snap["duration_s"] or snap["elapsed_s"]
    console.print(Rule("[bold]summary"))
    console.print(f"images done {snap['done']}/{snap['total']}, failed {snap['failed']}, "
                  f"processed {snap['processed']} ({max(0, snap['processed'] - snap['done'])} twice), "
                  f"runbook {seconds:.1f} s (run {run_s:.1f} s, {snap['rate_per_s']:.1f} images/s); "
                  f"outputs in {shared_root(c) / dst}", markup=False)
    if snap["done"] + snap["failed"] < snap["total"]:
        raise Exit("the demo did not finish every image")
