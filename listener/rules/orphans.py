"""OrphanWatch: a program that runs twice (or more). Pure.

supervisord puts every child in a process group of its own, so a supervisord killed with SIGKILL
(the OOM killer, kill -9, a crash) leaves its programs running, reparented to init; started again,
it spawns a second copy of each beside them: two market feeds, two order executors. Killed again,
it leaves a second generation beside the first. Orphans are state (the store's orphans table, by
pid and start time; listener/lifecycle checks them in /proc): they survive listener restarts and
reloads, and each is named with the supervisord that left it. One critical alert per program
that runs more than once, updated when another orphan of it appears, resolved with one message
when every orphan of it is gone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from .alerts import AlertBook
from .kinds import KINDS
from .models import ORPHAN, RUNS_TWICE, Outcome, display_name

TIMES = {2: "twice", 3: "three times", 4: "four times"}
ALL_GONE = "runs once again: every orphan is gone"


@dataclass(frozen=True)
class Orphan:
    """A process a supervisord that died left running: the same process while pid and start time agree."""

    namespec: str
    pid: int
    started: float  # its spawn time: with the pid, what tells it from a process that reused the pid
    supervisord_pid: int = 0  # the supervisord that left it (0: not known, an older store)
    left_at: float = 0.0  # when that supervisord died, or (death_seen False) when it was last heard from
    death_seen: bool = True  # the listener saw the death (else left_at is when it last heard from it)
    found_at: float = 0.0  # when lookout recorded it: an orphan found after an alert's last notice is news
    gone_at: float | None = None  # when lookout saw it gone (None: it still ran at the last look)

    def origin(self) -> str:
        """'left by supervisord pid 812, which died at 2026-11-29 03:12:09'."""
        if not self.supervisord_pid:
            return "left by a supervisord that died"
        if not self.left_at:
            return f"left by supervisord pid {self.supervisord_pid}"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.left_at))
        how = "which died at" if self.death_seen else "last heard from at"
        return f"left by supervisord pid {self.supervisord_pid}, {how} {when}"


@dataclass(frozen=True)
class Copies:
    """A program's processes now: its orphans still alive, oldest generation first, and the pid of
    the copy supervisord runs (0 while that copy is not running or not known yet)."""

    orphans: tuple[Orphan, ...]
    current: int = 0
    between_runs: bool = False  # supervisord's copy is STARTING, BACKOFF or STOPPING with no pid known

    @property
    def count(self) -> int:
        return len(self.orphans) + (1 if self.current else 0)


def describe(namespec: str, copies: Copies) -> str:
    """The alert's detail: every orphan named with its generation, and supervisord's own copy."""
    name, orphans, current = display_name(namespec), copies.orphans, copies.current
    pids = " ".join(str(o.pid) for o in orphans)
    several = TIMES.get(copies.count, f"{copies.count}").replace("twice", "two").replace(" times", "")
    stop = (f"Stop the orphan{'s' if len(orphans) > 1 else ''} (kill {pids}) unless {several} copies are harmless."
            if copies.count >= 2 else f"Stop it (kill {pids}) unless two copies are harmless once supervisord's own "
                                      "copy runs again.")
    if len(orphans) == 1:
        o = orphans[0]
        if not current:
            return (f"{name}: orphan pid {o.pid} ({o.origin()}) still runs; supervisord's own copy is not running "
                    f"now. {stop}")
        return (f"{name} runs twice: orphan pid {o.pid} from the previous supervisord, and pid {current}. "
                f"pid {o.pid} was {o.origin()}. {stop}")
    named = [f"{o.pid} ({o.origin()})" for o in orphans]
    listed = f"{', '.join(named[:-1])} and {named[-1]}"
    times = TIMES.get(copies.count, f"{copies.count} times")
    if not current:
        return f"{name} runs {times}: orphan pids {listed}; supervisord's own copy is not running now. {stop}"
    return f"{name} runs {times}: orphan pids {listed}, and pid {current}. {stop}"


class OrphanWatch:
    def __init__(self, alerts: AlertBook) -> None:
        self.alerts = alerts
        self.shown: dict[str, Copies] = {}  # what each open alert's text says (memory: rebuilt after a restart)

    def has_open(self) -> bool:
        return any(a.family == ORPHAN for a in self.alerts.alerts.values())

    def update(self, programs: Mapping[str, Copies], now: float, out: Outcome) -> None:
        """programs: namespec -> its copies, for every program with an orphan still alive. An alert
        opens when a program runs more than once; another orphan found since its last notice is
        one update; fewer orphans, or another pid for supervisord's copy, change only its text
        (`lookout status` and reminders show it), and a copy between two runs (a restart, a reload:
        its STARTING event names no pid) changes nothing; resolved when no orphan of it is left."""
        for ns, copies in programs.items():
            alert = self.alerts.get(ORPHAN, ns)
            if alert is None:
                severity = KINDS[RUNS_TWICE].severity
                if copies.count >= 2 and self.alerts.raise_(ORPHAN, ns, RUNS_TWICE, severity, now, out,
                                                             detail=describe(ns, copies)) is not None:
                    self.shown[ns] = copies
                continue
            before = self.shown.get(ns)
            if not copies.current and before is not None and (copies.between_runs or self.alerts.stopping()):
                copies = Copies(copies.orphans, before.current)  # its STARTING event names no pid: not news
            detail = describe(ns, copies)
            if detail == alert.detail:
                self.shown[ns] = copies
                continue
            news = any(o.found_at > (alert.last_notice_at or alert.opened_at) for o in copies.orphans)
            if news and copies.between_runs and not copies.current:
                continue  # its copy starts, no pid known yet: told once it has one, so the notice names every copy
            if news and self.alerts.stopping():
                continue  # told once supervisord runs again (a notice is not sent while it stops)
            self.alerts.update(ORPHAN, ns, now, out, detail=detail, notify=news)
            self.shown[ns] = copies
        for alert in [a for a in self.alerts.alerts.values() if a.family == ORPHAN and a.namespec not in programs]:
            self.alerts.close(ORPHAN, alert.namespec, now, out, ALL_GONE, notify=True)
            self.shown.pop(alert.namespec, None)
