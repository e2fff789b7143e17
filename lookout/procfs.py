"""Reading /proc (Linux): spawn times for the listener, resource use for probes and the exporter.

supervisord reports `start` in whole seconds, and events carry no time at all: a STARTING event
that waited in supervisord's buffer (the listener was busy or still starting) would make uptime
look seconds shorter than `supervisorctl status` says. /proc/<pid>/stat records when the kernel
forked the child, which is when supervisord spawned it, to the clock tick.

Resources (RSS, CPU time, open fds) are of a program and all its children: one pass over
/proc/*/stat builds the process tree (cached for a moment, so 200 memory probes a second cost
one pass, not 200); psutil would cost several reads per process per metric.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
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
    age = spawn_age(pid)
    return None if age is None else time.time() - age


def spawn_age(pid: int) -> float | None:
    """Seconds since `pid` was forked, whatever the wall clock did since (the listener subtracts it
    from its own clock); None if it is gone or /proc is not Linux's."""
    if _BOOTTIME is None or pid <= 0:
        return None
    fields = stat_fields(pid)
    if fields is None:
        return None
    try:
        ticks = int(fields[19])  # field 22, starttime
    except (IndexError, ValueError):
        return None
    return max(0.0, time.clock_gettime(_BOOTTIME) - ticks / CLOCK_TICKS)  # starttime: ticks since boot


def same_process(pid: int, started: float, within: float = 2.0) -> bool:
    """`pid` is still the process spawned at `started` (a reused pid has another spawn time), and
    not a zombie (exited, not yet reaped)."""
    fields = stat_fields(pid) if pid > 0 else None
    if fields is None or fields[0] in (b"Z", b"X"):
        return False
    spawned = spawn_time(pid)
    return spawned is not None and abs(spawned - started) < within


def is_lookout_exporter(pid: int) -> bool:
    """True when `pid` runs lookout-exporter (an orphan of it hands its port over by itself)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read(4096).split(b"\0")
    except OSError:
        return False
    return any(os.path.basename(a) == b"lookout-exporter" for a in argv[:2]) or b"lookout.exporter" in argv[:3]


def pid_gone(pid: int) -> bool:
    """True only when no process has this pid (not when we merely may not look at it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


@dataclass(frozen=True)
class Usage:
    rss_bytes: int
    cpu_seconds: float
    open_fds: int


def _stat(pid: str) -> tuple[int, float, int] | None:
    """(ppid, cpu seconds, rss bytes) from /proc/<pid>/stat; None if it is gone."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    try:
        ppid = int(fields[1])
        # utime + stime, plus cutime + cstime: children it already reaped stay counted
        cpu = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / CLOCK_TICKS
        rss = int(fields[21]) * PAGE_SIZE
    except (IndexError, ValueError):
        return None
    return ppid, cpu, rss


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def available() -> bool:
    return os.path.isdir("/proc/self/fd")


class ProcessTable:
    """Every process's parent, CPU time and RSS, from one pass over /proc; reused for `max_age`."""

    def __init__(self, max_age: float = 0.0) -> None:
        self.max_age = max_age
        self._lock = threading.Lock()
        self._taken = -1e9
        self._children: dict[int, list[int]] = {}
        self._stats: dict[int, tuple[float, int]] = {}

    def _refresh(self) -> None:
        children: dict[int, list[int]] = {}
        stats: dict[int, tuple[float, int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            st = _stat(entry)
            if st is None:
                continue
            pid = int(entry)
            children.setdefault(st[0], []).append(pid)
            stats[pid] = (st[1], st[2])
        self._children, self._stats, self._taken = children, stats, time.monotonic()

    def usage(self, roots: list[int]) -> dict[int, Usage]:
        """For each root pid, the totals over it and all its descendants (absent when it is gone)."""
        if not roots or not available():
            return {}
        with self._lock:
            if time.monotonic() - self._taken > self.max_age:
                self._refresh()
            children, stats = self._children, self._stats
        out: dict[int, Usage] = {}
        for root in roots:
            if root not in stats:
                continue
            rss = fds = 0
            cpu = 0.0
            stack, seen = [root], set()
            while stack:
                pid = stack.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                c, r = stats.get(pid, (0.0, 0))
                cpu, rss, fds = cpu + c, rss + r, fds + _fds(pid)
                stack.extend(children.get(pid, ()))
            out[root] = Usage(rss, cpu, fds)
        return out


def usage_by_root(roots: list[int]) -> dict[int, Usage]:
    """A fresh pass (the exporter's, once per scrape)."""
    return ProcessTable().usage(roots)
