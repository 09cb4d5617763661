"""Processes on this machine that outlive the invoke that started them: daemons, tunnels, schedulers.

``detach`` starts one through a shell that exits at once, so it is nobody's child (like a real machine's
daemon) and keeps no zombie in this process; ``ours`` tells whether a recorded pid is still that process (a
recycled pid is not); ``kill_all`` ends processes and counts a zombie as gone (who reaps it is not our business:
on some machines PID 1 reaps slowly).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import psutil


def detach(argv: list[str], log: Path) -> int:
    """Start ``argv`` in its own session with stdout and stderr appended to ``log``; return its pid."""
    launcher = subprocess.run(["sh", "-c", 'exec "$@" >>"$LOG" 2>&1 </dev/null & echo $!', "sh", *argv],
                              env={**os.environ, "LOG": str(log)}, capture_output=True, text=True,
                              start_new_session=True, check=True)
    return int(launcher.stdout.split()[-1])


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def ours(pid: int | None, match: Callable[[psutil.Process], bool]) -> psutil.Process | None:
    """The live (not zombie) process ``pid`` if ``match`` says it is the one we started, else None."""
    if not pid:
        return None
    try:
        proc = psutil.Process(int(pid))
        if proc.status() != psutil.STATUS_ZOMBIE and match(proc):
            return proc
    except psutil.Error:
        pass
    return None


def kill_all(procs: list[psutil.Process], sig: int = signal.SIGKILL, timeout: float = 5.0) -> list[psutil.Process]:
    """Send ``sig`` to every process and wait until each is gone or a zombie; return those still running."""
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    deadline = time.monotonic() + timeout
    while procs and time.monotonic() < deadline:
        procs = [p for p in procs if _running(p)]
        if procs:
            time.sleep(0.02)
    return procs


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU seconds ``proc`` has used so far, to the nanosecond where Linux says it (the sum of its threads'
    ``/proc/PID/task/TID/schedstat`` run times), else psutil's user + system (10 ms clock ticks: a probe of a few
    items on an idle head could read 0).  Raises psutil.Error when the process is gone."""
    try:
        tasks = os.listdir(f"/proc/{proc.pid}/task")
        total = 0
        for tid in tasks:
            with open(f"/proc/{proc.pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        if proc.is_running():                  # the pid still names the same process (psutil.Error if not)
            return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    t = proc.cpu_times()
    return t.user + t.system
