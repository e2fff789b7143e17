"""QuorumWatch: a numprocs pool (or a [group:]) with fewer than min_running processes RUNNING. Pure.

One critical alert per group once it has been below the minimum for `for` (a rolling restart
or a boot is not an outage), resolved when enough run again. Nothing while supervisord stops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .alerts import AlertBook
from .models import BELOW_QUORUM, QUORUM, Outcome, ProcessRecord
from .policy import PolicyBook


class QuorumWatch:
    def __init__(self, policies: PolicyBook, alerts: AlertBook, stopping: Callable[[], bool]) -> None:
        self.policies, self.alerts, self.stopping = policies, alerts, stopping
        self.below_since: dict[str, float] = {}

    @staticmethod
    def count(records: Iterable[ProcessRecord], group: str) -> tuple[int, int]:
        members = [r for r in records if r.group == group and r.present]
        return sum(r.state == "RUNNING" for r in members), len(members)

    def refresh(self, records: dict[str, ProcessRecord], groups: Iterable[str], now: float, out: Outcome) -> None:
        """After records of these groups changed."""
        for group in set(groups):
            rule = self.policies.group_rule(group)
            if rule is None:
                continue
            running, total = self.count(records.values(), group)
            if running >= rule.min_running or self.stopping():
                self.below_since.pop(group, None)
                if running >= rule.min_running:
                    why = f"is back to {running} of {total} running (minimum {rule.min_running})"
                    self.alerts.close(QUORUM, group, now, out, why, notify=True)
            else:
                self.below_since.setdefault(group, now)

    def on_time(self, records: dict[str, ProcessRecord], now: float, out: Outcome) -> None:
        for group, since in list(self.below_since.items()):
            rule = self.policies.group_rule(group)
            if rule is None or now - since < rule.sustain or self.alerts.get(QUORUM, group) is not None:
                continue
            running, total = self.count(records.values(), group)
            self.alerts.raise_(QUORUM, group, BELOW_QUORUM, rule.severity, now, out, opened_at=since,
                               detail=f"{group}: {running} of {total} running (minimum {rule.min_running})")

    def next_deadline(self) -> float | None:
        times = []
        for group, since in self.below_since.items():
            rule = self.policies.group_rule(group)
            if rule is not None and self.alerts.get(QUORUM, group) is None:
                times.append(since + rule.sustain)
        return min(times) if times else None
