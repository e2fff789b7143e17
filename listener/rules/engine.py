"""AlertEngine: events + time -> alert decisions. Pure: no I/O, no clock reads.

Inputs are PROCESS_STATE / SUPERVISOR_STATE events, getAllProcessInfo snapshots, exit statuses
read from supervisord's log, probe results, the results of lookout's own actions, and the
passing of time (``on_time``). Each returns an ``Outcome`` (records, alerts and probe states it
changed, notices to send, actions to take) for the caller to persist before it acts or acks.

The engine composes its parts and hands each input to the ones it concerns:
    process_alerts.ProcessAlerts      the process state machine: crashed, crash loop, exited, FATAL, recovery
    process_answers.SupervisordAnswers what supervisord's answers confirm (snapshots, exit statuses, starts)
    alerts.AlertBook          open alerts per (family, process), reminders
    health.HealthTracker      probe results -> healthy / unhealthy (fresh judgement)
    remediation.RemediationGuard   what lookout may do about an unhealthy process, budgets, backoff
    brake.CrashLoopBrake      a brake on supervisord's endless autorestart
    actions.OwnActions        lookout's own stops and starts, step by step; whose event was it?
    quorum.QuorumWatch        groups below min_running
    dependencies.DependencyWatch  [[dependencies]]: incidents with a cause, hands off, recovery, start-up

The operator always wins: an operator's stop or start calls off whatever lookout had pending for
that process (its action, a backoff, the brake) and resets its budgets; `lookout hold` keeps
lookout's hands off a process until `lookout release` or an operator's start.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...config import AlertSettings, ProbeSpec, RemediationSettings
from ...config.dependencies import CHECK_PREFIX, Dependency
from ..protocol.events import Event, ProcessGroupEvent, ProcessStateEvent, SupervisorStateEvent
from .actions import CRASHED_AGAIN, OPERATOR_STARTED, OPERATOR_STOPPED, OwnActions
from .alerts import AlertBook
from .brake import CrashLoopBrake
from .dependencies import DependencyWatch
from .health import HealthTracker
from .holds import HoldBook
from .models import ActionResult, Alert, Hold, Outcome, ProbeResult, ProbeState, ProcessRecord, ProcessSnapshot
from .orphans import Copies, OrphanWatch
from .policy import PolicyBook
from .process_alerts import LIVE_STATES, ProcessAlerts
from .process_answers import SupervisordAnswers
from .quorum import QuorumWatch
from .remediation import RemediationGuard
from .removal import Removals
from .timeshift import shift_engine

__all__ = ["LIVE_STATES", "AlertEngine"]


class AlertEngine:
    def __init__(
        self,
        settings: AlertSettings,
        records: Iterable[ProcessRecord] = (),
        open_alerts: Iterable[Alert] = (),
        *,
        stopping: bool = False,
        own_namespec: str = "",
        probes: tuple[ProbeSpec, ...] = (),
        remediation: RemediationSettings | None = None,
        probe_states: Iterable[ProbeState] = (),
        dependencies: tuple[Dependency, ...] = (),
        checks: tuple[ProbeSpec, ...] = (),
    ) -> None:
        self.settings = settings
        remediation = remediation or RemediationSettings()
        self.policies = PolicyBook(settings, probes, remediation.protected, own_namespec)
        self.records: dict[str, ProcessRecord] = {r.namespec: r for r in records}
        self.stopping = stopping
        self.stopping_since = 0.0
        self.own_namespec = own_namespec
        self.book = AlertBook(open_alerts, settings.repeat_interval, lambda: self.stopping)
        self.health = HealthTracker(self.policies, self.book, [s for s in probe_states
                                                                if not s.namespec.startswith(CHECK_PREFIX)])
        self.actions = OwnActions(remediation, self.policies, self.book, self.held, lambda: self.stopping,
                                  lambda ns, source: self._still_unhealthy(ns, source) is not None,
                                  lambda ns: self.deps.down(ns))
        self.holds = HoldBook(self.actions)
        probe_states = list(probe_states)
        self.deps = DependencyWatch(dependencies, checks, self.records, self.book, self.health, self.actions,
                                    self.held, lambda: self.stopping, probe_states)
        self.book.quiet = self.deps.quiet
        self.guard = RemediationGuard(remediation, self.policies, self.book, self.actions, lambda: self.stopping,
                                      self.held, self.deps.down)
        self.brake = CrashLoopBrake(self.actions, self.policies, self.book, remediation.dry_run,
                                    lambda: self.stopping, self.held, self.deps.down)
        self.quorum = QuorumWatch(self.policies, self.book, lambda: self.stopping)
        self.orphans = OrphanWatch(self.book)
        self.removals = Removals(self.book, self.actions, self.guard, self.health, self.quorum)
        self.process = ProcessAlerts(settings, self.records, self.policies, self.book, self.health, self.actions,
                                     self.holds, self.guard, self.brake, self.quorum, own_namespec,
                                     self.deps.resolution_waits)
        self.answers = SupervisordAnswers(settings, self.process, self.book, self.health, self.actions,
                                          self.quorum, self.removals)
        # A listener that (re)starts acts only on what it sees itself: a stored verdict or a waiting
        # restart (remembered: remediation_wanted) is not acted on until new results agree; an action
        # that was in flight is finished or reported once supervisord's view (the first reconcile) says
        # where it got to.
        for rec in self.records.values():
            if rec.action is not None:
                rec.action.interrupted = True

    @property
    def alerts(self) -> dict:
        return self.book.alerts

    def held(self, namespec: str) -> bool:
        return namespec in self.holds

    # ---- inputs -------------------------------------------------------------------------

    def on_event(self, event: Event, now: float) -> Outcome:
        out = Outcome()
        if isinstance(event, SupervisorStateEvent):
            stopping = event.state == "STOPPING"
            if stopping != self.stopping:
                self.stopping, out.flags_changed = stopping, True
                self.stopping_since = now if stopping else 0.0
                if stopping:
                    self.quorum.spells.clear()
        elif isinstance(event, ProcessStateEvent):
            self.process.on_process_state(event, now, out, stopping=self.stopping)
        elif isinstance(event, ProcessGroupEvent) and event.change == "REMOVED":
            self.removals.group_removed(event.group, self.records.values(), now, out)
            for rec in self.records.values():
                if rec.group == event.group:
                    self.process.pending.forget(rec.namespec)
                    self.process.touch(rec, out)
        self.deps.settle(now, out)
        return out

    def on_probe_result(self, result: ProbeResult, now: float) -> Outcome:
        out = Outcome()
        if result.namespec.startswith(CHECK_PREFIX):
            self.deps.on_check_result(result, now, out)
            self.deps.settle(now, out)
            return out
        if result.namespec in self.process.pending.unconfirmed:
            return out  # judged only once supervisord has confirmed which process this is
        rec = self.records.get(result.namespec)
        spec = self.health.on_result(result, rec, now, out)
        if spec is not None and rec is not None and spec.action != "alert":
            self.guard.want(rec, spec, now, out)
            self.process.touch(rec, out)
        self.deps.settle(now, out)
        return out

    def on_action_result(self, result: ActionResult, now: float) -> Outcome:
        """One step of lookout's own action answered (executor thread)."""
        out = Outcome()
        rec = self.records.get(result.namespec)
        if rec is not None:
            deferred = self.actions.on_result(result, rec, now, out)
            if deferred == OPERATOR_STOPPED:
                self.process.operator_stopped(rec, now, out)
            elif deferred == OPERATOR_STARTED:
                self.process.operator_started(rec, now, out)
            elif deferred == CRASHED_AGAIN and rec.brake_delay:  # its failures came while the start was in flight
                self.brake.hold(rec, self.policies.lookup(rec.namespec).crash_loop, now, out)
            self.guard.on_time(rec, lambda wanted: self._still_unhealthy(rec.namespec, wanted), now, out)
            self.process.touch(rec, out)
            self.process.refresh_quorum(rec, now, out)
        self.deps.settle(now, out)
        return out

    def on_orphans(self, programs: dict[str, Copies], now: float) -> Outcome:
        """The programs with orphans of a killed supervisord still alive (beside the new copy or not)."""
        out = Outcome()
        self.orphans.update(programs, now, out)
        return out

    def on_holds(self, holds: Iterable[Hold], now: float) -> Outcome:
        """The operator's holds as the store has them now (`lookout hold` / `lookout release`)."""
        out = Outcome()
        for rec in self.holds.update(holds, self.records, now, out):
            loop = self.policies.lookup(rec.namespec).crash_loop
            if (not self.held(rec.namespec) and loop.action == "backoff" and rec.brake_delay and rec.crash_looping
                    and rec.brake_resume_at is None and rec.state in ("BACKOFF", "FATAL")):
                self.brake.hold(rec, loop, now, out)  # released: the brake's round the hold held back
            self.process.touch(rec, out)
        self.deps.settle(now, out)
        return out

    def on_time(self, now: float) -> Outcome:
        out = Outcome()
        if self.stopping:
            return out
        for ns in list(self.process.watched):
            rec = self.records[ns]
            self.process.on_time(rec, now, out)
            loop = self.policies.lookup(ns).crash_loop
            self.brake.on_time(rec, loop, now, out)
            self.guard.on_time(rec, lambda source, ns=ns: self._still_unhealthy(ns, source), now, out)
            if ns in out.records:  # something changed: persist it, and maybe stop watching
                self.process.touch(rec, out)
        self.quorum.on_time(self.records, now, out)
        self.book.remind(now, out)
        self.deps.settle(now, out)
        return out

    def shift(self, delta: float) -> Outcome:
        """The wall clock stepped by delta and the loop's clock with it: every time held here moves
        too (timeshift.py), so no deadline comes sooner or later; the outcome holds it all again."""
        return shift_engine(self, delta)

    def _still_unhealthy(self, namespec: str, source: str) -> ProbeSpec | None:
        return next((spec for spec in self.health.unhealthy(namespec) if f"probe:{spec.name}" == source), None)

    def next_deadline(self) -> float | None:
        """The earliest time at which on_time could decide something."""
        if self.stopping:
            return None
        times = []
        for ns in self.process.watched:
            rec = self.records[ns]
            times.extend(self.process.deadlines(rec))
            brake_at = self.brake.deadline(rec, self.policies.lookup(ns).crash_loop)
            if brake_at is not None:
                times.append(brake_at)
            wanted_at = self.guard.deadline(rec)
            if wanted_at is not None:
                times.append(wanted_at)
        times.extend(t for t in (self.quorum.next_deadline(), self.book.next_reminder(), self.deps.deadline())
                     if t is not None)
        return min(times) if times else None

    # ---- supervisord's answers (process_answers.py) -----------------------------------------

    def on_snapshot(self, infos: Iterable[ProcessSnapshot], taken_at: float, now: float) -> Outcome:
        out = Outcome()
        if self.stopping and taken_at > self.stopping_since:
            # getAllProcessInfo answered, so supervisord is RUNNING again (Fault 6 otherwise).
            self.stopping, self.stopping_since, out.flags_changed = False, 0.0, True
        infos = list(infos)
        out = self.answers.on_snapshot(infos, taken_at, now, out)
        if not self.stopping:
            self.deps.on_snapshot(infos, now, out)
            self.deps.settle(now, out)
        return out

    def on_exit_observed(self, namespec: str, status: int | None, text: str, ran: float | None = None,
                         pid: int | None = None) -> Outcome:
        return self.answers.on_exit_observed(namespec, status, text, ran, pid)

    def on_start_observed(self, namespec: str, start: float, *, exact: bool = False, pid: int = 0) -> Outcome:
        return self.answers.on_start_observed(namespec, start, exact=exact, pid=pid)

    def on_start_unknown(self, namespec: str) -> Outcome:
        return self.answers.on_start_unknown(namespec)
