"""QuorumWatch: a numprocs pool (or a [group:]) with fewer than min_running processes RUNNING. Pure.

One critical alert per group once it has been short for `for` (a rolling restart or a boot is
not an outage), resolved when enough run again. Nothing while supervisord stops. Members an
operator stopped are deliberate, not down: they do not count against min_running (the
minimum becomes at most the members not stopped on purpose, so `supervisorctl stop pool:*` pages
nobody, and a member crashing in a pool an operator scaled down still does); what lookout's
brake stopped counts as down. The alert lists each
missing member with its state and since when.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .alerts import AlertBook
from .models import BELOW_QUORUM, QUORUM, Outcome, ProcessRecord
from .policy import PolicyBook


def deliberate(rec: ProcessRecord) -> bool:
    """Stopped on purpose: by an operator, or never started (autostart=false), not by lookout; or
    being stopped (STOPPING: someone asked for it; a graceful drain may outlast `for`)."""
    return (rec.state == "STOPPED" and rec.stopped_by != "lookout") or rec.state == "STOPPING"


@dataclass(frozen=True)
class GroupCount:
    running: int
    total: int
    deliberate: int
    missing: tuple[ProcessRecord, ...]  # neither RUNNING nor deliberately stopped

    def needed(self, minimum: int) -> int:
        """min_running, lowered by the members stopped on purpose (never below zero)."""
        return max(0, min(minimum, self.total - self.deliberate))

    def short_of(self, minimum: int) -> bool:
        return self.running < self.needed(minimum)


def count(records: Iterable[ProcessRecord], group: str) -> GroupCount:
    members = [r for r in records if r.group == group and r.present]
    running = sum(r.state == "RUNNING" for r in members)
    stopped = sum(deliberate(r) for r in members)
    missing = tuple(sorted((r for r in members if r.state != "RUNNING" and not deliberate(r)),
                           key=lambda r: r.name))
    return GroupCount(running, len(members), stopped, missing)


def describe(group: str, c: GroupCount, minimum: int) -> str:
    """'pool: 2 of 4 running (minimum 3); down: pool_1 FATAL since 12:03:04, ...; 1 stopped by an operator'."""
    lowered = f", {c.needed(minimum)} while {c.deliberate} are stopped on purpose" if c.needed(minimum) < minimum \
        else ""
    text = f"{group}: {c.running} of {c.total} running (minimum {minimum}{lowered})"
    if c.missing:
        shown = [f"{r.name} {r.state} since {time.strftime('%H:%M:%S', time.localtime(r.state_since))}"
                 for r in c.missing[:10]]
        more = f" and {len(c.missing) - 10} more" if len(c.missing) > 10 else ""
        text += f"; down: {', '.join(shown)}{more}"
    if c.deliberate and not lowered:
        text += f"; {c.deliberate} stopped on purpose"
    return text


class QuorumWatch:
    def __init__(self, policies: PolicyBook, alerts: AlertBook, stopping: Callable[[], bool]) -> None:
        self.policies, self.alerts, self.stopping = policies, alerts, stopping
        self.below_since: dict[str, float] = {}

    def refresh(self, records: dict[str, ProcessRecord], groups: Iterable[str], now: float, out: Outcome) -> None:
        """After records of these groups changed."""
        for group in set(groups):
            rule = self.policies.group_rule(group)
            if rule is None:
                continue
            c = count(records.values(), group)
            if not c.short_of(rule.min_running) or self.stopping():
                self.below_since.pop(group, None)
                if not c.short_of(rule.min_running):
                    why = f"is back to {c.running} of {c.total} running (minimum {rule.min_running})"
                    self.alerts.close(QUORUM, group, now, out, why, notify=True)
            else:
                self.below_since.setdefault(group, now)
                alert = self.alerts.get(QUORUM, group)
                if alert is not None and alert.detail != describe(group, c, rule.min_running):
                    self.alerts.update(QUORUM, group, now, out, detail=describe(group, c, rule.min_running),
                                       notify=False)

    def on_time(self, records: dict[str, ProcessRecord], now: float, out: Outcome) -> None:
        for group, since in list(self.below_since.items()):
            rule = self.policies.group_rule(group)
            if rule is None or now - since < rule.sustain or self.alerts.get(QUORUM, group) is not None:
                continue
            c = count(records.values(), group)
            self.alerts.raise_(QUORUM, group, BELOW_QUORUM, rule.severity, now, out, opened_at=since,
                               detail=describe(group, c, rule.min_running))

    def next_deadline(self) -> float | None:
        times = []
        for group, since in self.below_since.items():
            rule = self.policies.group_rule(group)
            if rule is not None and self.alerts.get(QUORUM, group) is None:
                times.append(since + rule.sustain)
        return min(times) if times else None
