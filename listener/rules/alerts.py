"""AlertBook: the open alerts, one per (family, process), and the notices they owe people. Pure.

Every rule (process states, health, remediation, quorum) raises, updates and closes alerts
here, so escalation, reminders and "nothing while supervisord stops or reloads" work the same
for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .kinds import KINDS
from .models import FIRING, REMINDER, RESOLVED, UPDATE, Alert, AlertKey, HistoryEntry, Notice, Outcome


def _named(alert: Alert) -> str:
    return f"{alert.kind} ({alert.probe} probe)" if alert.probe else alert.kind


class AlertBook:
    def __init__(self, open_alerts: Iterable[Alert], repeat_interval: float, stopping: Callable[[], bool]) -> None:
        self.alerts: dict[AlertKey, Alert] = {a.key: a for a in open_alerts if a.is_open}
        # Closed a moment ago: what lookout did can still be written into them (its result may come
        # back after the probe already passed), so the resolution tells the whole story.
        self.recently_closed: dict[AlertKey, Alert] = {}
        self.repeat_interval = repeat_interval
        self.stopping = stopping
        # Whether a notice of this alert is folded into another's (dependencies.py: its cause's incident),
        # or waits (its first page, while a cause may still show): asked before each notice.
        self.quiet: Callable[[Alert, str, float], bool] = lambda alert, kind, now: False

    def _notice(self, alert: Alert, kind: str, now: float, out: Outcome) -> bool:
        """One notice of alert, unless it is folded into its cause's incident (or waits to be)."""
        if self.quiet(alert, kind, now):
            return False
        if kind != RESOLVED:
            alert.last_notice_at = now
        out.notices.append(Notice(alert.key, kind, now))
        return True

    def get(self, family: str, namespec: str) -> Alert | None:
        return self.alerts.get((family, namespec))

    def of(self, namespec: str) -> list[Alert]:
        return [a for a in self.alerts.values() if a.namespec == namespec]

    def raise_(self, family: str, namespec: str, kind: str, severity: str, now: float, out: Outcome, *,
               opened_at: float | None = None, failures: int = 0, restarts_at_open: int = 0,
               tags: tuple[str, ...] = (), detail: str = "", evidence: str = "") -> Alert | None:
        """Open an alert, or escalate the open one of this family; nothing while supervisord
        stops or reloads (it moves processes around on purpose)."""
        if self.stopping():
            return None
        alert = self.alerts.get((family, namespec))
        if alert is not None:
            alert.updated_at = now
            if KINDS[kind].rank > KINDS[alert.kind].rank:  # it got worse: one new message
                alert.previous_kind, alert.previous_severity = alert.kind, alert.severity
                alert.kind, alert.severity = kind, severity
                alert.detail = detail or alert.detail
                alert.evidence = evidence or alert.evidence
                self._notice(alert, FIRING, now, out)
                said = f"{_named(alert)} ({severity}), was {alert.previous_kind}" + (f": {detail}" if detail else "")
                out.history.append(HistoryEntry(now, namespec, "alert", said))
            out.alerts[alert.key] = alert
            return alert
        self.recently_closed.pop((family, namespec), None)
        alert = Alert(namespec=namespec, kind=kind, severity=severity, opened_at=opened_at or now, updated_at=now,
                      failures=failures, restarts_at_open=restarts_at_open, tags=tags, detail=detail,
                      family=family, evidence=evidence)
        self.alerts[alert.key] = alert
        out.alerts[alert.key] = alert
        self._notice(alert, FIRING, now, out)
        out.history.append(HistoryEntry(now, namespec, "alert", f"{_named(alert)} ({severity})"
                            + (f": {detail}" if detail else "")))
        return alert

    def raise_owed(self, alert: Alert, now: float, out: Outcome) -> None:
        """The first page of an alert that waited to see whether it folds into a cause (dependencies.py)."""
        if not self.stopping() and alert.is_open:
            self._notice(alert, FIRING, now, out)

    def update(self, family: str, namespec: str, now: float, out: Outcome, *, detail: str = "",
               action_taken: str = "", evidence: str = "", notify: bool = True, log: bool = True) -> Alert | None:
        """New facts about an open alert (what lookout did about it): one UPDATE notice. An alert that
        closed a moment ago takes the facts without a notice: its resolution carries them."""
        alert = self.alerts.get((family, namespec))
        if alert is None:
            alert = self.recently_closed.get((family, namespec))
            notify = False
        if alert is None:
            return None
        alert.updated_at = now
        alert.detail = detail or alert.detail
        said_before = alert.action_taken
        alert.action_taken = action_taken or alert.action_taken
        alert.evidence = evidence or alert.evidence
        out.alerts[alert.key] = alert
        if notify and not self.stopping():
            self._notice(alert, UPDATE, now, out)
        if log and action_taken and action_taken != said_before:
            out.history.append(HistoryEntry(now, namespec, "action", action_taken))
        return alert

    def close(self, family: str, namespec: str, now: float, out: Outcome, why: str, notify: bool) -> Alert | None:
        alert = self.alerts.pop((family, namespec), None)
        if alert is None:
            return None
        alert.resolved_at, alert.resolution, alert.updated_at = now, why, now
        out.alerts[alert.key] = alert
        self.recently_closed[alert.key] = alert
        if len(self.recently_closed) > 256:
            self.recently_closed.pop(next(iter(self.recently_closed)))
        if notify:
            self._notice(alert, RESOLVED, now, out)
        out.history.append(HistoryEntry(now, namespec, "resolved", f"{_named(alert)} resolved: {why}"))
        return alert

    def amend(self, family: str, namespec: str, now: float, out: Outcome, why: str) -> Alert | None:
        """An alert closed a moment ago for a reason that turned out to be another (the stop that
        `supervisorctl update` makes before it removes a group looked like an operator's): it takes the
        new reason. Its resolution's message, still pending, says the new one (the store keeps one
        pending resolution per alert); one already sent is followed by one more."""
        alert = self.recently_closed.get((family, namespec))
        if alert is None or alert.resolution == why:
            return None
        alert.resolution, alert.updated_at = why, now
        out.alerts[alert.key] = alert
        self._notice(alert, RESOLVED, now, out)
        out.history.append(HistoryEntry(now, namespec, "resolved",
                                        f"{_named(alert)} resolved: {why} (not as said before)"))
        return alert

    def close_all(self, namespec: str, now: float, out: Outcome, why: str, notify: bool,
                  keep: Callable[[Alert], bool] = lambda a: False) -> None:
        for alert in self.of(namespec):
            if not keep(alert):
                self.close(alert.family, namespec, now, out, why, notify)

    def remind(self, now: float, out: Outcome) -> None:
        for alert in self.alerts.values():
            if alert.last_notice_at is not None and now - alert.last_notice_at >= self.repeat_interval:
                if not self._notice(alert, REMINDER, now, out):
                    alert.last_notice_at = now  # (folded: its cause's reminder tells it)
                out.alerts[alert.key] = alert

    def next_reminder(self) -> float | None:
        times = [a.last_notice_at + self.repeat_interval for a in self.alerts.values() if a.last_notice_at is not None]
        return min(times) if times else None
