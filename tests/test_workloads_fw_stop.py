"""workloads/fw_stop.py: a stop signal sets a flag that the run loops check; the old handlers come back."""
from __future__ import annotations

import os
import signal

import pytest

from tests.support import workloads as workloads_support  # noqa: F401 - puts workloads/ on sys.path

import fw_stop  # noqa: E402


def test_a_signal_inside_asks_the_loops_to_stop_and_the_old_handler_returns():
    before = signal.getsignal(signal.SIGHUP)
    with fw_stop.stop_on_signals():
        assert fw_stop.stop_signal() is None
        fw_stop.check_stop()                              # nothing asked yet: no exception
        os.kill(os.getpid(), signal.SIGHUP)               # delivered before kill() returns (main thread)
        assert fw_stop.stop_signal() == signal.SIGHUP
        with pytest.raises(fw_stop.Stopped):
            fw_stop.check_stop()
    assert signal.getsignal(signal.SIGHUP) is before
    with fw_stop.stop_on_signals():                       # a new run starts with the flag cleared
        assert fw_stop.stop_signal() is None
