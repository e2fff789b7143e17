"""OrphanWatch: a program that runs twice. Pure.

supervisord puts every child in a process group of its own, so a supervisord killed with SIGKILL
(the OOM killer, kill -9, a crash) leaves its programs running, reparented to init; started again,
it spawns a second copy of each beside them: two market feeds, two order executors. The listener
finds such orphans (their pids and start times from the store, checked in /proc; listener/lifecycle)
and hands them here: one critical alert per program that runs twice, naming both pids, resolved when
the orphan is gone.
"""

from __future__ import annotations

from collections.abc import Mapping

from .alerts import AlertBook
from .models import ORPHAN, RUNS_TWICE, Outcome, display_name


class OrphanWatch:
    def __init__(self, alerts: AlertBook) -> None:
        self.alerts = alerts

    def has_open(self) -> bool:
        return any(a.family == ORPHAN for a in self.alerts.alerts.values())

    def update(self, orphans: Mapping[str, tuple[int, int]], now: float, out: Outcome) -> None:
        """orphans: namespec -> (orphan pid, pid of the copy the new supervisord runs, 0 if none runs
        now), for every orphan still alive; an alert whose orphan is gone is resolved (a copy that is
        only restarting does not resolve it)."""
        for ns, (orphan, current) in orphans.items():
            if current and self.alerts.get(ORPHAN, ns) is None:
                self.alerts.raise_(ORPHAN, ns, RUNS_TWICE, "critical", now, out,
                                   detail=f"{display_name(ns)} runs twice: orphan pid {orphan} from the previous "
                                          f"supervisord, and pid {current}. Stop the orphan (kill {orphan}) unless "
                                          "two copies are harmless.")
        for alert in [a for a in self.alerts.alerts.values() if a.family == ORPHAN and a.namespec not in orphans]:
            self.alerts.close(ORPHAN, alert.namespec, now, out, "the orphan is gone", notify=True)
