"""AlertEngine: events + time -> alert decisions. Pure: no I/O, no clock reads.

Inputs are PROCESS_STATE / SUPERVISOR_STATE events, getAllProcessInfo snapshots, exit statuses
read from supervisord's log, probe results, the results of lookout's own actions, and the
passing of time (``on_time``). Each returns an ``Outcome`` (records, alerts and probe states it
changed, notices to send, actions to take) for the caller to persist before it acts or acks.

The engine runs the process state machine itself and hands the rest to its parts:
    alerts.AlertBook          open alerts per (family, process), reminders
    health.HealthTracker      probe results -> healthy / unhealthy (fresh judgement)
    remediation.RemediationGuard   what lookout may do about an unhealthy process, budgets, backoff
    brake.CrashLoopBrake      a brake on supervisord's endless autorestart
    actions.OwnActions        lookout's own stops and starts, step by step; whose event was it?
    quorum.QuorumWatch        groups below min_running

The table the rules implement (see the README):
- unexpected exit after RUNNING, then respawned          -> "crashed" (warning)
- failures (unexpected exits + BACKOFF) reach crash_loop -> "crash_loop" replaces it (critical)
- FATAL                                                  -> "fatal" (critical)
- unexpected exit, no respawn after exit_grace and supervisord confirms it is still EXITED
                                                         -> "exited" (critical)
- RUNNING for stable_after with an alert open, and supervisord confirms it -> resolved
- expected exits, operator stop/start, supervisord stopping or reloading -> nothing

The operator always wins: an operator's stop or start calls off whatever lookout had pending for
that process (its action, a backoff, the brake) and resets its budgets; `lookout hold` keeps
lookout's hands off a process until `lookout release` or an operator's start.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...config import AlertSettings, ProbeSpec, RemediationSettings
from ..protocol.events import Event, ProcessGroupEvent, ProcessStateEvent, SupervisorStateEvent
from .actions import CRASHED_AGAIN, LOOKOUT, OPERATOR, OPERATOR_STARTED, OPERATOR_STOPPED, OwnActions
from .alerts import AlertBook
from .brake import CrashLoopBrake
from .health import HealthTracker
from .holds import HoldBook
from .models import (
    CRASH_LOOP,
    CRASHED,
    FATAL,
    LEFT_STOPPED,
    PROCESS,
    REMEDIATION,
    ActionResult,
    Alert,
    Hold,
    Outcome,
    ProbeResult,
    ProbeState,
    ProcessRecord,
)
from .orphans import Copies, OrphanWatch
from .policy import PolicyBook
from .quorum import QuorumWatch
from .remediation import RemediationGuard
from .removal import Removals
from .snapshot import LIVE_STATES, SnapshotRules
from .timeshift import shift_engine


class AlertEngine(SnapshotRules):
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
    ) -> None:
        self.settings = settings
        remediation = remediation or RemediationSettings()
        self.policies = PolicyBook(settings, probes, remediation.protected, own_namespec)
        self.records: dict[str, ProcessRecord] = {r.namespec: r for r in records}
        self.stopping = stopping
        self.stopping_since = 0.0
        self.own_namespec = own_namespec
        self.book = AlertBook(open_alerts, settings.repeat_interval, lambda: self.stopping)
        self.health = HealthTracker(self.policies, self.book, probe_states)
        self.actions = OwnActions(remediation, self.policies, self.book, self.held, lambda: self.stopping,
                                  lambda ns, source: self._still_unhealthy(ns, source) is not None)
        self.holds = HoldBook(self.actions)
        self.guard = RemediationGuard(remediation, self.policies, self.book, self.actions, lambda: self.stopping,
                                      self.held)
        self.brake = CrashLoopBrake(self.actions, self.policies, self.book, remediation.dry_run,
                                    lambda: self.stopping, self.held)
        self.quorum = QuorumWatch(self.policies, self.book, lambda: self.stopping)
        self.orphans = OrphanWatch(self.book)
        self.removals = Removals(self.book, self.actions, self.guard, self.health, self.quorum)
        # A listener that (re)starts acts only on what it sees itself: a stored verdict or a waiting
        # restart (remembered: remediation_wanted) is not acted on until new results agree; an action
        # that was in flight is finished or reported once supervisord's view (the first reconcile) says
        # where it got to.
        for rec in self.records.values():
            if rec.action is not None:
                rec.action.interrupted = True
        # Records that a timer may act on (pending exit, failing while running, brake, backoff):
        # on_time looks at these and at open alerts only, so an event costs O(1) with 1000 programs.
        self._watch = {r.namespec for r in self.records.values() if self._needs_watch(r)}
        self._confirming: set[str] = set()  # pending exits we asked supervisord about
        # Seemingly stable for stable_after: resolved only once supervisord confirms it (events
        # reach us late when supervisord or we are busy; a resolution must not rest on old news).
        self._stable_checks: set[str] = set()
        self._stable_not_before: dict[str, float] = {}  # asked too early (events still queued): ask again then
        self._unheard_since: dict[str, float] = {}  # first seen stable but not yet named by an event
        # A pending exit seen EXITED once, by its stop time: a second snapshot (answered in a later
        # iteration of supervisord's loop, after it had the chance to respawn) must agree.
        self._exit_sightings: dict[str, int] = {}
        # Exits whose status was asked of supervisord's log: namespec -> [(pid, when, run seconds)],
        # oldest first. The answer names the run (pid): a later run's exit is never pinned on this one.
        self._exits_awaited: dict[str, list[tuple[int | None, float, float | None]]] = {}
        # Loaded from the store: which process runs is not known until supervisord says so (a reload
        # may have replaced them all); probe results about them wait for that.
        self._unconfirmed: set[str] = set(self.records)

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
            self._on_process_state(event, now, out)
        elif isinstance(event, ProcessGroupEvent) and event.change == "REMOVED":
            self.removals.group_removed(event.group, self.records.values(), now, out)
            for rec in self.records.values():
                if rec.group == event.group:
                    self._forget_timers(rec.namespec)
                    self._touch(rec, out)
        return out

    def on_probe_result(self, result: ProbeResult, now: float) -> Outcome:
        out = Outcome()
        if result.namespec in self._unconfirmed:
            return out  # judged only once supervisord has confirmed which process this is
        rec = self.records.get(result.namespec)
        spec = self.health.on_result(result, rec, now, out)
        if spec is not None and rec is not None and spec.action != "alert":
            self.guard.want(rec, spec, now, out)
            self._touch(rec, out)
        return out

    def on_action_result(self, result: ActionResult, now: float) -> Outcome:
        """One step of lookout's own action answered (executor thread)."""
        out = Outcome()
        rec = self.records.get(result.namespec)
        if rec is not None:
            deferred = self.actions.on_result(result, rec, now, out)
            if deferred == OPERATOR_STOPPED:
                self._operator_stopped(rec, now, out)
            elif deferred == OPERATOR_STARTED:
                self._operator_started(rec, now, out)
            elif deferred == CRASHED_AGAIN and rec.brake_delay:  # its failures came while the start was in flight
                self.brake.hold(rec, self.policies.lookup(rec.namespec).crash_loop, now, out)
            self.guard.on_time(rec, lambda wanted: self._still_unhealthy(rec.namespec, wanted), now, out)
            self._touch(rec, out)
            self._refresh_quorum(rec, now, out)
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
            self._touch(rec, out)
        return out

    def on_time(self, now: float) -> Outcome:
        out = Outcome()
        if self.stopping:
            return out
        s = self.settings
        for ns in list(self._watch):
            rec = self.records[ns]
            if rec.pending_exit_at is not None and ns not in self._confirming \
                    and now - rec.pending_exit_at >= s.exit_grace:
                # No STARTING yet. In a storm it may just be queued behind hundreds of events,
                # so ask supervisord rather than guess: on_snapshot decides.
                self._confirming.add(ns)
                out.reconcile = f"confirm whether {ns} was respawned"
            if rec.failing_since is not None and rec.state == "RUNNING" and rec.running_since is not None \
                    and now - rec.running_since >= s.stable_after and ns not in self._stable_checks \
                    and now >= self._stable_not_before.get(ns, now):
                self._stable_checks.add(ns)  # on_snapshot resolves it if supervisord agrees
                out.reconcile = f"confirm that {ns} runs stably"
            loop = self.policies.lookup(ns).crash_loop
            self.brake.on_time(rec, loop, now, out)
            self.guard.on_time(rec, lambda source, ns=ns: self._still_unhealthy(ns, source), now, out)
            if ns in out.records:  # something changed: persist it, and maybe stop watching
                self._touch(rec, out)
        self.quorum.on_time(self.records, now, out)
        self.book.remind(now, out)
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
        s = self.settings
        times = []
        for ns in self._watch:
            rec = self.records[ns]
            if rec.pending_exit_at is not None and ns not in self._confirming:
                times.append(rec.pending_exit_at + s.exit_grace)
            if rec.failing_since is not None and rec.state == "RUNNING" and rec.running_since \
                    and ns not in self._stable_checks:
                times.append(max(rec.running_since + s.stable_after, self._stable_not_before.get(ns, 0.0)))
            brake_at = self.brake.deadline(rec, self.policies.lookup(ns).crash_loop)
            if brake_at is not None:
                times.append(brake_at)
            wanted_at = self.guard.deadline(rec)
            if wanted_at is not None:
                times.append(wanted_at)
        times.extend(t for t in (self.quorum.next_deadline(), self.book.next_reminder()) if t is not None)
        return min(times) if times else None

    # ---- process state machine ----------------------------------------------------------

    def _on_process_state(self, ev: ProcessStateEvent, now: float, out: Outcome) -> None:
        rec = self._record(ev.group, ev.name)
        if ev.state == "STARTING":
            self._unconfirmed.discard(rec.namespec)  # a new process: its RUNNING event brings its pid
        self._stable_checks.discard(rec.namespec)  # news: a stable run is judged afresh
        self._stable_not_before.pop(rec.namespec, None)
        self._unheard_since.pop(rec.namespec, None)
        out.history.append((now, rec.namespec, "state", ev.describe()))
        rec.state, rec.state_since, rec.event_at, rec.present = ev.state, now, now, True
        rec.pid = ev.pid if ev.state in LIVE_STATES else None
        if rec.pid:
            rec.event_pid = rec.pid
        state = ev.state
        if state == "STARTING":
            rec.last_start, rec.running_since = now, None
            out.start_lookups.append(rec.namespec)
            if ev.from_state in ("EXITED", "BACKOFF"):
                rec.restarts += 1
            elif ev.from_state in ("STOPPED", "FATAL") and self.actions.started(rec, now, out) == OPERATOR:
                self._operator_started(rec, now, out)  # a start call by hand (or at boot), not lookout's
            rec.remediation_wanted, rec.stopped_by = "", ""  # a new process: judged afresh
            self.health.reset(rec.namespec, out)  # every start: counts from zero, the grace again
            if rec.pending_exit_at is not None:  # the unexpected exit was respawned
                rec.pending_exit_at = None
                self._confirming.discard(rec.namespec)
                self._exit_sightings.pop(rec.namespec, None)
                self._raise(rec, CRASHED, now, out)
        elif state == "RUNNING":
            rec.running_since, rec.spawnerr = now, ""
            left = self.book.get(REMEDIATION, rec.namespec)
            if left is not None and left.kind == LEFT_STOPPED:  # resolved once supervisord confirms it
                out.reconcile = out.reconcile or f"confirm that {rec.namespec} runs again"
        elif state in ("BACKOFF", "EXITED"):
            started = rec.last_start or rec.running_since  # from spawn: what a person means
            rec.last_run_seconds = now - started if started else None
            rec.last_exit_at, rec.running_since = now, None
            rec.last_exit_status, rec.last_exit_text = None, ""
            pid = ev.pid if state == "EXITED" else None  # (BACKOFF events name no pid)
            self._exits_awaited.setdefault(rec.namespec, []).append((pid, now, rec.last_run_seconds))
            out.exit_lookups.append((rec.namespec, pid))
            if state == "BACKOFF" or ev.expected is False:
                rec.unexpected_exits += 1
                if state == "EXITED":
                    rec.pending_exit_at = now
                self._failure(rec, now, out)
        elif state == "FATAL":
            rec.fatals += 1
            rec.pending_exit_at = None
            self._raise(rec, FATAL, now, out)
        elif state == "STOPPED":
            rec.pending_exit_at, rec.running_since = None, None
            if self.stopping:
                pass  # shutdown or reload: supervisord moves processes around on purpose
            else:
                who = self.actions.stopped(rec, ev.pid or 0, now, out)
                if who == OPERATOR:  # the problem is theirs now
                    self._operator_stopped(rec, now, out)
                elif who == LOOKOUT:
                    rec.stopped_by = LOOKOUT  # its alert says why
        self._touch(rec, out)
        self._refresh_quorum(rec, now, out)

    def _refresh_quorum(self, rec: ProcessRecord, now: float, out: Outcome) -> None:
        if self.policies.group_rule(rec.group) is not None:
            self.quorum.refresh(self.records, (rec.group,), now, out)

    def _operator_stopped(self, rec: ProcessRecord, now: float, out: Outcome) -> None:
        """An operator's stop: their alerts close quietly-ish ("stopped"), lookout lets go of it."""
        rec.stopped_by, rec.operator_at = OPERATOR, now
        # ("stopped" does not resolve "it is stopped": that one waits for supervisord to show it running)
        self.book.close_all(rec.namespec, now, out, "stopped", notify=True, keep=lambda a: a.kind == LEFT_STOPPED)
        self._reset_failures(rec)
        self._operator_took_over(rec, out)

    def _operator_started(self, rec: ProcessRecord, now: float, out: Outcome) -> None:
        """An operator's start (or supervisord's at boot): lookout lets go of it, a hold ends."""
        rec.operator_at = now
        self._operator_took_over(rec, out)
        rec.failures, rec.crash_looping = [], False
        self.holds.operator_started(rec.namespec, now, out)

    def _operator_took_over(self, rec: ProcessRecord, out: Outcome) -> None:
        self.guard.operator_took_over(rec)
        self.health.reset(rec.namespec, out)

    def _failure(self, rec: ProcessRecord, now: float, out: Outcome) -> None:
        loop = self.policies.lookup(rec.namespec).crash_loop
        rec.failures = [t for t in rec.failures if t > now - loop.within]
        rec.failures.append(now)
        self._begin_episode(rec, now)
        alert = self.book.get(PROCESS, rec.namespec)
        if alert is not None:
            alert.failures += 1
            alert.updated_at = now
            out.alerts[alert.key] = alert
        if not rec.crash_looping and len(rec.failures) >= loop.restarts:
            rec.crash_looping = True
            if not self.brake.engage(rec, loop, now, out):  # "stop" raises BRAKED itself
                self._raise(rec, CRASH_LOOP, now, out)
                self.brake.start(rec, loop, now, out)
        elif rec.brake_delay and loop.action == "backoff" and rec.brake_resume_at is None:
            self.brake.hold(rec, loop, now, out)  # (while the brake waits, a failure is news from before its stop)
        elif rec.crash_looping and loop.action == "stop" and not rec.braked:
            self.brake.engage(rec, loop, now, out)  # (the config asks for the stop brake only now)

    def _raise(self, rec: ProcessRecord, kind: str, now: float, out: Outcome, detail: str = "") -> None:
        self._begin_episode(rec, now)
        policy = self.policies.lookup(rec.namespec)
        if policy.ignore or rec.namespec == self.own_namespec:
            return  # we cannot usefully alert on our own death: the exporter's heartbeat does
        self.book.raise_(PROCESS, rec.namespec, kind, policy.severity_for(kind), now, out,
                         opened_at=rec.failing_since, failures=len(rec.failures),
                         restarts_at_open=rec.restarts_before_failing, tags=policy.tags, detail=detail)

    @staticmethod
    def _begin_episode(rec: ProcessRecord, now: float) -> None:
        if rec.failing_since is None:
            rec.failing_since = now
            # A crash is noticed at EXITED, its restart is counted at the STARTING after it.
            rec.restarts_before_failing = rec.restarts

    @staticmethod
    def _reset_failures(rec: ProcessRecord) -> None:
        rec.failures, rec.failing_since, rec.crash_looping = [], None, False

    # ---- bookkeeping --------------------------------------------------------------------

    def _forget_timers(self, namespec: str) -> None:
        """A process gone from supervisord: nothing waits on it any more."""
        self._confirming.discard(namespec)
        self._stable_checks.discard(namespec)
        self._stable_not_before.pop(namespec, None)
        self._unheard_since.pop(namespec, None)
        self._exit_sightings.pop(namespec, None)
        self._exits_awaited.pop(namespec, None)

    def _record(self, group: str, name: str) -> ProcessRecord:
        ns = f"{group}:{name}"
        rec = self.records.get(ns)
        if rec is None:
            rec = self.records[ns] = ProcessRecord(group=group, name=name)
        return rec

    @staticmethod
    def _needs_watch(rec: ProcessRecord) -> bool:
        return (rec.pending_exit_at is not None or rec.failing_since is not None or rec.brake_resume_at is not None
                or bool(rec.brake_delay) or bool(rec.remediation_wanted))

    def _touch(self, rec: ProcessRecord, out: Outcome) -> None:
        out.records[rec.namespec] = rec
        if self._needs_watch(rec):
            self._watch.add(rec.namespec)
        else:
            self._watch.discard(rec.namespec)
