"""CPU, memory and open fds of each program and its children, read from /proc in one pass.

psutil would cost several file reads per process per metric; at 1000 programs that alone would
eat the scrape budget. Here: one read of /proc/<pid>/stat per process on the machine (ppid,
CPU times, RSS), one listdir of /proc/<pid>/fd per process in a program's tree. Linux only;
elsewhere resource metrics are simply absent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..listener.procfs import CLOCK_TICKS, stat_fields

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


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


def usage_by_root(roots: list[int]) -> dict[int, Usage]:
    """For each root pid (a supervisord child), the totals over it and all its descendants."""
    if not roots or not available():
        return {}
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
    out: dict[int, Usage] = {}
    for root in roots:
        if root not in stats:
            continue
        rss = fds = 0
        cpu = 0.0
        stack = [root]
        while stack:
            pid = stack.pop()
            c, r = stats.get(pid, (0.0, 0))
            cpu, rss, fds = cpu + c, rss + r, fds + _fds(pid)
            stack.extend(children.get(pid, ()))
        out[root] = Usage(rss, cpu, fds)
    return out
