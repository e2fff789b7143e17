"""The kernel's fork time of a child: what uptime is measured from."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from lookout.procfs import spawn_time

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc")


def test_spawn_time_of_a_child_is_when_it_was_forked():
    before = time.time()
    child = subprocess.Popen(["sleep", "30"])
    try:
        after = time.time()
        spawned = spawn_time(child.pid)
        assert spawned is not None
        assert before - 0.05 <= spawned <= after + 0.05  # one clock tick is 10 ms
    finally:
        child.kill()
        child.wait()


def test_spawn_time_of_a_missing_pid_is_none():
    assert spawn_time(2**22 + 12345) is None
    assert spawn_time(0) is None
