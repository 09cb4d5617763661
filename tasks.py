"""fleetbook: push a heavy batch job through many cheap machines, after making one machine fast.

Only assembly happens here; every step lives in playbooks/.  `invoke --list` shows them all.
"""
from invoke import Collection

from playbooks import (batch_tasks, bench, dask_tasks, data, deploy, demo, fleet, image, mount, overhead, progress,
                       run, shell, teardown)
from playbooks.settings.flags import allow_double_dash_short_options
from playbooks.settings.defaults import DEFAULTS
from playbooks.settings.errors import at_task_boundary
from playbooks import plan  # noqa: E402,I001 - its own line: `invoke plan` (issue 16)

allow_double_dash_short_options()  # `invoke fleet.create --n 20` as well as `-n 20`

ns = Collection(
    Collection.from_module(fleet, name="fleet"),
    Collection.from_module(image, name="image"),
    Collection.from_module(bench, name="bench"),
    Collection.from_module(dask_tasks, name="dask"),
    Collection.from_module(batch_tasks, name="batch"),
    Collection.from_module(data, name="data"),
    mount.mount, mount.unmount, deploy.deploy, run.run_, run.stop, progress.progress, overhead.overhead,
    shell.exec_, shell.ssh, teardown.teardown,
    demo.demo,
)
ns.add_task(plan.plan)
ns.configure(DEFAULTS)
at_task_boundary(ns)  # every step ends a library error (FleetbookError) as Invoke's one-line Exit
