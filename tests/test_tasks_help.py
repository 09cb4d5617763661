"""`invoke --list` shows every task with a one-line help, and every argument of every task has help text."""
from __future__ import annotations

import importlib

import pytest


def all_tasks(collection, prefix=""):
    for name, task in collection.tasks.items():
        yield prefix + name, task
    for name, sub in collection.collections.items():
        yield from all_tasks(sub, f"{prefix}{name}.")


TASKS = list(all_tasks(importlib.import_module("tasks").ns))


def test_the_namespace_has_the_runbook():
    names = {n for n, _ in TASKS}
    assert {"fleet.create", "fleet.list", "fleet.down", "mount", "unmount", "deploy", "run", "stop", "progress",
            "teardown", "demo", "overhead", "bench.run", "image.bake", "dask.up", "dask.down", "batch.setup",
            "batch.submit", "batch.status", "batch.down"} <= names


@pytest.mark.parametrize("name,task", TASKS, ids=[n for n, _ in TASKS])
def test_every_task_and_argument_is_explained(name, task):
    assert (task.__doc__ or "").strip().splitlines()[0], f"{name} has no one-line help"
    missing = [a.name for a in task.get_arguments() if not (a.help or "").strip()]
    assert not missing, f"{name}: no help for {missing}"
