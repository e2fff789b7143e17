"""Removals: programs and groups that `supervisorctl reread` + `update` took out of supervisord. Pure.

Their open alerts close with one message each, "removed from supervisord's configuration", the
group's quorum alert too (not "back to 0 of 0 running"), at the PROCESS_GROUP_REMOVED event; the
reconcile (a process absent from getAllProcessInfo) is the fallback for a missed event.

`update` stops a removed group's processes before it removes the group: their STOPPED events come
first, and look like an operator's stop ("stopped by an operator", the quorum "back to ..."). Those
alerts were closed by that stop a moment ago; the removal gives them its own reason instead, and
their pending message says that (one message; if it already went out, one more says it). A group
removed and added back (a changed configuration) starts afresh: nothing of its past carries over
(failures, brake, budgets, probe verdicts, lookout's wanted actions).
"""

from __future__ import annotations

from collections.abc import Iterable

from .actions import OPERATOR, OwnActions
from .alerts import AlertBook
from .health import HealthTracker
from .models import ORPHAN, QUORUM, REMOVED_FROM_CONFIG, STOPPED_BY_OPERATOR, HistoryEntry, Outcome, ProcessRecord
from .quorum import QuorumWatch
from .remediation import RemediationGuard

# How long before the removal `update`'s stop of a group may have closed its alerts: stopProcessGroup
# waits for the slowest member (stopwaitsecs), the removal follows at once.
UPDATE_STOP_WINDOW = 120.0


class Removals:
    def __init__(self, alerts: AlertBook, actions: OwnActions, guard: RemediationGuard, health: HealthTracker,
                 quorum: QuorumWatch) -> None:
        self.alerts, self.actions, self.guard, self.health, self.quorum = alerts, actions, guard, health, quorum

    def group_removed(self, group: str, records: Iterable[ProcessRecord], now: float, out: Outcome) -> None:
        """PROCESS_GROUP_REMOVED: every process of the group, and the group's quorum alert."""
        members = [r for r in records if r.group == group]
        stopped = [r.state_since for r in members
                   if r.state == "STOPPED" and 0 <= now - r.state_since <= UPDATE_STOP_WINDOW]
        for rec in members:
            if rec.present:
                self.process_removed(rec, now, out)
        self.quorum.forget(group)
        closed = self.alerts.recently_closed.get((QUORUM, group))
        if closed is not None and stopped and (closed.resolved_at or 0.0) >= min(stopped):
            self.alerts.amend(QUORUM, group, now, out, REMOVED_FROM_CONFIG)  # `update`'s stops closed it: "back to"
        self.alerts.close(QUORUM, group, now, out, REMOVED_FROM_CONFIG, notify=True)

    def process_removed(self, rec: ProcessRecord, now: float, out: Outcome) -> None:
        """One process no longer in supervisord: its alerts close with the removal's reason, and what lookout
        held or wanted for it ends. An orphan of it still runs outside supervisord: that alert stays."""
        rec.present = False
        if self._stopped_by_update(rec, now):
            for alert in [a for a in self.alerts.recently_closed.values() if a.namespec == rec.namespec
                          and a.resolution == STOPPED_BY_OPERATOR and a.resolved_at == rec.operator_at]:
                self.alerts.amend(alert.family, rec.namespec, now, out, REMOVED_FROM_CONFIG)
        self.alerts.close_all(rec.namespec, now, out, REMOVED_FROM_CONFIG, notify=True,
                              keep=lambda a: a.family == ORPHAN)
        self.actions.cancel(rec, REMOVED_FROM_CONFIG, now, out)  # (its calls would meet BAD_NAME anyway)
        self.guard.operator_took_over(rec)  # budgets, the brake, wanted actions: gone with it
        self.health.reset(rec.namespec, out)
        rec.failures, rec.failing_since, rec.crash_looping = [], None, False
        rec.pending_exit_at, rec.down_since, rec.stopped_by = None, None, ""
        out.records[rec.namespec] = rec
        out.history.append(HistoryEntry(now, rec.namespec, "state", REMOVED_FROM_CONFIG))

    @staticmethod
    def _stopped_by_update(rec: ProcessRecord, now: float) -> bool:
        """Its last stop looked like an operator's and came just before the removal: `update`'s own."""
        return (rec.state == "STOPPED" and rec.stopped_by == OPERATOR
                and 0 <= now - rec.operator_at <= UPDATE_STOP_WINDOW)
