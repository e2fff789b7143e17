"""QuorumWatch: a numprocs pool (or a [group:]) with fewer than min_running processes RUNNING. Pure.

One critical alert per group once it has been short for `for` (a rolling restart or a boot is
not an outage), resolved when enough run again. `for` counts the time short, not an unbroken
run of it: a spell runs from the group's first drop until it has stayed at or above the minimum
for stable_after, and the time short adds up across it, so members that flap (RUNNING for a
second between crashes) no longer restart the count with each brief run (Prometheus' `for`
does, which hides exactly that). Flapping: a member that went down from RUNNING more than once
in the spell with no operator's start or stop in between; the alert names them. A group back
without flapping is resolved at once; one that flapped, or whose past this listener does not
know (an alert from the store, a reload), once it has stayed at or above the minimum for
stable_after. Nothing while supervisord stops. Members an operator stopped are deliberate, not
down: they do not count against min_running (the minimum becomes at most the members not
stopped on purpose, so `supervisorctl stop pool:*` pages nobody, and a member crashing in a pool
an operator scaled down still does); what lookout's brake stopped counts as down. The alert
lists each missing member with its state and since when.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ...config import GroupRule, format_duration
from .alerts import AlertBook
from .models import BELOW_QUORUM, QUORUM, Outcome, ProcessRecord
from .policy import PolicyBook


def are(n: int) -> str:
    """'1 is', '2 are': the count of members stopped on purpose reads as English."""
    return f"{n} is" if n == 1 else f"{n} are"


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
    members: tuple[ProcessRecord, ...] = ()

    @property
    def up(self) -> frozenset[str]:
        """The names of the members RUNNING."""
        return frozenset(r.name for r in self.members if r.state == "RUNNING")

    def needed(self, minimum: int) -> int:
        """min_running, lowered by the members stopped on purpose (never below zero)."""
        return max(0, min(minimum, self.total - self.deliberate))

    def short_of(self, minimum: int) -> bool:
        return self.running < self.needed(minimum)


def count(records: Iterable[ProcessRecord], group: str) -> GroupCount:
    members = tuple(r for r in records if r.group == group and r.present)
    running = sum(r.state == "RUNNING" for r in members)
    stopped = sum(deliberate(r) for r in members)
    missing = tuple(sorted((r for r in members if r.state != "RUNNING" and not deliberate(r)),
                           key=lambda r: r.name))
    return GroupCount(running, len(members), stopped, missing, members)


@dataclass
class ShortSpell:
    """One time a group ran short: from its first drop until it has stayed at or above the minimum
    for stable_after. Times are the loop's `now`."""

    started_at: float
    short_since: float | None  # this stretch below the minimum began (None: at or above it now)
    above_since: float | None = None  # at or above the minimum since (None: short now)
    short_before: float = 0.0  # seconds below the minimum in the stretches that have ended
    known: bool = True  # False: taken up from an alert already open (the store, a reload): its past is unknown
    # member -> (times it went down from RUNNING, its operator_at then): an operator's start or stop
    # since (supervisord gave up on it, somebody fixed it) forgives the earlier ones
    downs: dict[str, tuple[int, float]] = field(default_factory=dict)

    def short_for(self, now: float) -> float:
        return self.short_before + (now - self.short_since if self.short_since is not None else 0.0)

    def over(self, now: float, stable_after: float) -> bool:
        return self.above_since is not None and now - self.above_since >= stable_after

    def flapping(self) -> list[tuple[str, int]]:
        """(member, times down) of the members down from RUNNING more than once, by name."""
        return sorted((name, n) for name, (n, _) in self.downs.items() if n > 1)

    def look(self, c: GroupCount, up_before: frozenset[str]) -> None:
        """Count the members that went down from RUNNING since the last look: exited, backing off,
        FATAL. Not STARTING: a RUNNING member is seen STARTING only when events queued before a
        listener's start replay supervisord's boot over the reconcile's newer view (a crash shows
        EXITED or BACKOFF first). An operator's start or stop starts a member's count over."""
        missing = {r.name for r in c.missing}
        for r in c.members:
            n, acted = self.downs.get(r.name, (0, r.operator_at))
            if acted != r.operator_at:
                n = 0
            if r.name in missing and r.name in up_before and r.state != "STARTING":
                n += 1
            if n or r.name in self.downs:
                self.downs[r.name] = (n, r.operator_at)


def describe(group: str, c: GroupCount, minimum: int, spell: ShortSpell | None = None, now: float = 0.0) -> str:
    """'pool: 2 of 4 running (minimum 3); down: pool_1 FATAL since 12:03:04, ...; 1 stopped by an operator',
    and for a flapping group '; flapping: pool_1 down 9 times, ...; short for 21s of the last 30s'."""
    lowered = f", {c.needed(minimum)} while {are(c.deliberate)} stopped on purpose" \
        if c.needed(minimum) < minimum else ""
    text = f"{group}: {c.running} of {c.total} running (minimum {minimum}{lowered})"
    if c.missing:
        shown = [f"{r.name} {r.state} since {time.strftime('%H:%M:%S', time.localtime(r.state_since))}"
                 for r in c.missing[:10]]
        more = f" and {len(c.missing) - 10} more" if len(c.missing) > 10 else ""
        text += f"; down: {', '.join(shown)}{more}"
    if c.deliberate and not lowered:
        text += f"; {c.deliberate} stopped on purpose"
    flapping = spell.flapping() if spell is not None else []
    if flapping and spell is not None:
        more = f" and {len(flapping) - 10} more" if len(flapping) > 10 else ""
        text += (f"; flapping: {', '.join(f'{name} down {n} times' for name, n in flapping[:10])}{more}"
                 f"; short for {format_duration(spell.short_for(now))} of the last "
                 f"{format_duration(now - spell.started_at)}")
    return text


class QuorumWatch:
    def __init__(self, policies: PolicyBook, alerts: AlertBook, stopping: Callable[[], bool]) -> None:
        self.policies, self.alerts, self.stopping = policies, alerts, stopping
        self.spells: dict[str, ShortSpell] = {}
        self.up: dict[str, frozenset[str]] = {}  # group -> its members RUNNING at the last look

    def forget(self, group: str) -> None:
        """The group left supervisord's configuration (removal.py): its spell and last look go with it."""
        self.spells.pop(group, None)
        self.up.pop(group, None)

    def refresh(self, records: dict[str, ProcessRecord], groups: Iterable[str], now: float, out: Outcome) -> None:
        """After records of these groups changed."""
        for group in set(groups):
            rule = self.policies.group_rule(group)
            if rule is None:
                continue
            c = count(records.values(), group)
            up_before, self.up[group] = self.up.get(group, frozenset()), c.up
            short = c.short_of(rule.min_running)
            if self.stopping():  # supervisord moves processes around on purpose: nothing counts
                self.spells.pop(group, None)
                if not short:
                    self._resolve(group, c, rule, now, out, waited=False)
                continue
            spell = self.spells.get(group)
            if spell is not None and spell.over(now, rule.stable_after):
                del self.spells[group]  # stable long enough: a drop now is a new spell
                if self.alerts.get(QUORUM, group) is not None:
                    self._resolve(group, c, rule, now, out, waited=True)
                spell = None
            if short:
                spell = self._short(group, spell, now)
            else:
                spell = self._not_short(group, spell, now)
                if spell is None:
                    continue
            spell.look(c, up_before)
            alert = self.alerts.get(QUORUM, group)
            if alert is not None and not short and spell.known and not spell.flapping():
                self._resolve(group, c, rule, now, out, waited=False)  # back, and it did not flap
            elif alert is not None and alert.detail != (detail := describe(group, c, rule.min_running, spell, now)):
                self.alerts.update(QUORUM, group, now, out, detail=detail, notify=False)

    def _short(self, group: str, spell: ShortSpell | None, now: float) -> ShortSpell:
        if spell is None:
            known = self.alerts.get(QUORUM, group) is None  # else: open from before this listener or reload
            spell = self.spells[group] = ShortSpell(started_at=now, short_since=now, known=known)
        elif spell.short_since is None:
            spell.short_since, spell.above_since = now, None
        return spell

    def _not_short(self, group: str, spell: ShortSpell | None, now: float) -> ShortSpell | None:
        """At or above the minimum: the stretch below ends. None when there is no spell to follow."""
        if spell is None:
            alert = self.alerts.get(QUORUM, group)
            if alert is None:
                return None
            spell = self.spells[group] = ShortSpell(started_at=alert.opened_at, short_since=None, above_since=now,
                                                    known=False)
        elif spell.short_since is not None:
            spell.short_before += now - spell.short_since
            spell.short_since, spell.above_since = None, now
        return spell

    def _resolve(self, group: str, c: GroupCount, rule: GroupRule, now: float, out: Outcome, waited: bool) -> None:
        why = f"is back to {c.running} of {c.total} running (minimum {rule.min_running})"
        self.alerts.close(QUORUM, group, now, out, why + (f" for {format_duration(rule.stable_after)}" if waited
                                                          else ""), notify=True)

    def on_time(self, records: dict[str, ProcessRecord], now: float, out: Outcome) -> None:
        for group, spell in list(self.spells.items()):
            rule = self.policies.group_rule(group)
            if rule is None:
                del self.spells[group]
                continue
            alert = self.alerts.get(QUORUM, group)
            if spell.over(now, rule.stable_after):
                del self.spells[group]
                if alert is not None:
                    self._resolve(group, count(records.values(), group), rule, now, out, waited=True)
            elif alert is None and spell.short_since is not None and spell.short_for(now) >= rule.sustain:
                c = count(records.values(), group)
                self.alerts.raise_(QUORUM, group, BELOW_QUORUM, rule.severity, now, out, opened_at=spell.started_at,
                                   detail=describe(group, c, rule.min_running, spell, now))

    def next_deadline(self) -> float | None:
        times = []
        for group, spell in self.spells.items():
            rule = self.policies.group_rule(group)
            if rule is None:
                continue
            open_ = self.alerts.get(QUORUM, group) is not None
            if not open_ and spell.short_since is not None:
                times.append(spell.short_since + max(0.0, rule.sustain - spell.short_before))
            elif open_ and spell.above_since is not None:
                times.append(spell.above_since + rule.stable_after)
        return min(times) if times else None
