"""fw_faults: test-only fault injection at the output writes (``$FLEETBOOK_FAULT``).  Standard library only."""
from __future__ import annotations

import os
import random
import signal

_FAULT_COUNT = 0
_RUNNER: dict = {}          # in a pool worker: the pid of its runner (see in_pool_worker)


def in_pool_worker(runner_pid: int) -> None:
    """Called in each pool worker: a fault there kills its runner too (the whole node dies)."""
    _RUNNER["pid"] = runner_pid


def fault(point: str, fd: int | None = None) -> None:
    """Test-only: ``FLEETBOOK_FAULT=after-tmp-write|mid-write[:N|:P]`` kills this process (and its runner when in
    a pool worker) at the N-th output write (default 1) or with probability P (0 < P < 1) per write."""
    spec = os.environ.get("FLEETBOOK_FAULT")
    if not spec:
        return
    name, _, arg = spec.partition(":")
    if name != point:
        return
    global _FAULT_COUNT
    _FAULT_COUNT += 1
    if arg and "." in arg:
        rng = random.Random(f"{os.environ.get('FLEETBOOK_FAULT_SEED', '0')}:{os.getpid()}:{_FAULT_COUNT}")
        if rng.random() >= float(arg):
            return
    elif _FAULT_COUNT != (int(arg) if arg else 1):
        return
    if fd is not None:                      # leave a half-written temp file behind
        size = os.lseek(fd, 0, os.SEEK_END)
        os.ftruncate(fd, size // 2)
    runner = _RUNNER.get("pid")
    if runner and runner == os.getppid():
        os.kill(runner, signal.SIGKILL)        # the whole node dies, not just one worker
    os.kill(os.getpid(), signal.SIGKILL)


def mount_down(path: str = "") -> None:
    """Test-only: while the file named by ``$FLEETBOOK_FAULT_MOUNT_DOWN`` exists, every source read, output
    write and mount probe fails as over an sshfs mount that died (ENOTCONN, "Transport endpoint is not
    connected"); removing the file brings the "mount" back.  Shared by a runner and its pool workers."""
    flag = os.environ.get("FLEETBOOK_FAULT_MOUNT_DOWN")
    if flag and os.path.exists(flag):
        import errno
        raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN), path or None)
