"""A Dask worker whose shared-disk mount dropped (issue 13 item 4, on the Dask engine): found from the head, remounted.

While a run is on, a thread on the head asks every worker every ``dask.mount_check_s`` seconds whether its node's
mount answers (``dask_chunk.mount_state``, a bounded ``statfs``, through Dask's own ``client.run``: no SSH while all
is well). A node whose mount is dead is remounted by the ``remount`` the step gave (``run`` passes
``mount.mount_all``: lazy unmount of the dead mount, then sshfs), at most once per ``dask.mount_check_s`` x 3 while
it stays dead. Its chunks in flight wait for the mount (fleetwork's ride-out, ``job.mount_wait``) and go on, and so
does a chunk that arrives meanwhile (``dask_chunk.run_chunk``): no chunk fails and no item is recorded as failed.
Without this, its sshfs gone, the node held its chunk for ``job.mount_wait`` (60 s), Dask then ran it elsewhere, and
the node stayed without its mount (tests/test_dask_fleet.py: 61.4 s for a run of 2.4 s). Each repair is kept
(``repairs``: node, cause, when it was seen, when it was remounted) for the run's record and result.
"""
from __future__ import annotations

import threading
import time

from rich.console import Console

console = Console()


class MountWatch:
    """The watching thread of one run (``with MountWatch(...)``); ``repairs``: what it did."""

    def __init__(self, remount, nodes, client, every: float):
        """``remount(nodes)``: one result (``.ok``, ``.error``) per node, as ``ssh.fanout.fan_out`` gives."""
        self.remount, self.client = remount, client
        self.nodes = {n.name: n for n in nodes}
        self.every = max(0.2, float(every))
        self.repairs: list[dict] = []
        self._tried: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dask-mount-watch", daemon=True)

    def __enter__(self):
        if self.remount is not None and self.nodes:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.check()
            except Exception as e:  # noqa: BLE001 - a look that fails (the scheduler busy or gone) is just skipped
                console.print(f"dask: could not look at the workers' mounts: {type(e).__name__}: {e}", markup=False)

    def dead(self) -> dict[str, str]:
        """node name -> why its mount does not answer, from every worker's own look (several workers of one node
        say the same)."""
        from playbooks.engines import dask_chunk
        looks = self.client.run(dask_chunk.mount_state, on_error="return")
        out = {}
        for look in looks.values():
            if isinstance(look, dict) and not look.get("ok") and look.get("node") in self.nodes:
                out[look["node"]] = str(look.get("error") or "no answer")
        return out

    def check(self) -> None:
        now = time.time()
        for name, why in self.dead().items():
            if now - self._tried.get(name, 0.0) < 3 * self.every:
                continue                      # a repair under way, or just failed: looked at again later
            self._tried[name] = now
            rep = {"node": name, "cause": why, "detected_at": now}
            console.print(f"dask: {name}'s mount does not answer ({why}): remounting it", markup=False)
            [m] = self.remount([self.nodes[name]])
            if m.ok:
                rep["remounted_at"] = time.time()
                console.print(f"dask: {name} remounted in {rep['remounted_at'] - now:.1f} s; its chunks go on",
                              markup=False)
            else:
                rep["remount_failed"] = str(m.error)
                console.print(f"dask: remounting {name} failed ({m.error}); its chunks fail after job.mount_wait "
                              "and Dask runs them elsewhere", markup=False)
            self.repairs.append(rep)
