"""Reading /proc/<pid>/stat (Linux), for the listener's spawn times and the exporter's resources.

supervisord reports `start` in whole seconds, and events carry no time at all: a STARTING event
that waited in supervisord's buffer (the listener was busy or still starting) would make uptime
look seconds shorter than `supervisorctl status` says. /proc/<pid>/stat records when the kernel
forked the child, which is when supervisord spawned it, to the clock tick.
"""

from __future__ import annotations

import os
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after "(comm)": field 3 (state) is index 0. None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()  # the command name may hold spaces and ')'


def spawn_time(pid: int) -> float | None:
    """Unix time at which `pid` was forked; None if it is gone or /proc is not Linux's."""
    if _BOOTTIME is None or pid <= 0:
        return None
    fields = stat_fields(pid)
    if fields is None:
        return None
    try:
        ticks = int(fields[19])  # field 22, starttime
    except (IndexError, ValueError):
        return None
    # starttime counts clock ticks since boot, on CLOCK_BOOTTIME; convert to wall-clock time
    return time.time() - (time.clock_gettime(_BOOTTIME) - ticks / CLOCK_TICKS)
