"""A process's exact spawn time, read from /proc (Linux).

supervisord reports `start` in whole seconds, and events carry no time at all: a STARTING event
that waited in supervisord's buffer (the listener was busy or still starting) would make uptime
look seconds shorter than `supervisorctl status` says. /proc/<pid>/stat records when the kernel
forked the child, which is when supervisord spawned it, to the clock tick.
"""

from __future__ import annotations

import os
import time

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def spawn_time(pid: int) -> float | None:
    """Unix time at which `pid` was forked; None if it is gone or /proc is not Linux's."""
    if _BOOTTIME is None or pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        # fields after "(comm)": field 3 (state) is index 0, field 22 (starttime) index 19
        ticks = int(raw[raw.rfind(b")") + 2 :].split()[19])
    except (OSError, IndexError, ValueError):
        return None
    # starttime counts clock ticks since boot, on CLOCK_BOOTTIME; convert to wall-clock time
    return time.time() - (time.clock_gettime(_BOOTTIME) - ticks / _CLOCK_TICKS)
