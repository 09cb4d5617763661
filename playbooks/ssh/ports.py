"""The one port probe: is a TCP port free here, does something answer there (an SSH banner, say), until when.

``free(host, port)``                        nothing listens there: this machine can bind it
``answers(host, port, timeout, expect)``    a connection is accepted (and its first bytes start with ``expect``)
``banner(host, port, timeout)``             an SSH server answers with its banner
``wait_answer(host, port, timeout, alive)`` ``answers`` polled until the deadline, or until ``alive()`` says the
                                            process that should listen is gone
"""
from __future__ import annotations

import socket
import time


def free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def answers(host: str, port: int, timeout: float, expect: bytes = b"") -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            if not expect:
                return True
            s.settimeout(timeout)
            return s.recv(len(expect)).startswith(expect)
    except OSError:
        return False


def banner(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when an SSH server answers with its banner at host:port."""
    return answers(host, port, timeout, b"SSH-")


def wait_answer(host: str, port: int, timeout: float, alive=lambda: True, poll: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(host, port, 1.0):
            return True
        if not alive():
            return False
        time.sleep(poll)
    return False
