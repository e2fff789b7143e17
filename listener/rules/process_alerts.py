"""Every decision about a process alert from its state changes: crashed, crash loop, exited,
FATAL, and its recovery. Pure: events + time -> decisions. What supervisord's answers confirm
(an exit that stays EXITED, a run that is really stable) is decided next door, in
process_answers.py, on the same pending state.

The table (see the README):
- unexpected exit after RUNNING, then respawned          -> "crashed" (warning); again while it
                                                            is open: an update ("crashed again")
- failures (unexpected exits + BACKOFF) reach crash_loop -> "crash_loop" replaces it (critical)
- FATAL                                                  -> "fatal" (critical)
- unexpected exit, no respawn after exit_grace and supervisord confirms it is still EXITED
                                                         -> "exited" (critical)
- a must_run program down after an expected exit for its grace, and supervisord confirms it
                                                         -> "not_running" (critical)
- RUNNING for stable_after with an alert open, and supervisord confirms it -> resolved
- expected exits (of programs not must_run), operator stop/start, supervisord stopping or
  reloading -> nothing
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ...config import AlertSettings
from ..protocol.events import ProcessStateEvent
from .actions import LOOKOUT, OPERATOR, OwnActions
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
    START,
    SUPERVISORD,
    HistoryEntry,
    Outcome,
    ProcessRecord,
)
from .policy import PolicyBook
from .quorum import QuorumWatch
from .remediation import RemediationGuard

LIVE_STATES = ("STARTING", "RUNNING", "STOPPING")


@dataclass
class Pending:
    """What the process rules wait for, by namespec. Memory only: a new listener asks again."""

    confirming: set[str] = field(default_factory=set)  # pending exits we asked supervisord about
    # Seemingly stable for stable_after: resolved only once supervisord confirms it (events reach us
    # late when supervisord or we are busy; a resolution must not rest on old news).
    stable_checks: set[str] = field(default_factory=set)
    stable_not_before: dict[str, float] = field(default_factory=dict)  # asked too early: ask again then
    unheard_since: dict[str, float] = field(default_factory=dict)  # first seen stable, not yet named by an event
    # A pending exit seen EXITED once, by its stop time: a second snapshot (answered in a later
    # iteration of supervisord's loop, after it had the chance to respawn) must agree.
    exit_sightings: dict[str, int] = field(default_factory=dict)
    # Exits whose status was asked of supervisord's log: namespec -> [(pid, when, run seconds)],
    # oldest first. The answer names the run (pid): a later run's exit is never pinned on this one.
    exits_awaited: dict[str, list[tuple[int | None, float, float | None]]] = field(default_factory=dict)
    # Loaded from the store: which process runs is not known until supervisord says so (a reload
    # may have replaced them all); probe results about them wait for that.
    unconfirmed: set[str] = field(default_factory=set)

    def forget(self, namespec: str) -> None:
        """A process gone from supervisord: nothing waits on it any more."""
        self.confirming.discard(namespec)
        self.stable_checks.discard(namespec)
        self.stable_not_before.pop(namespec, None)
        self.unheard_since.pop(namespec, None)
        self.exit_sightings.pop(namespec, None)
        self.exits_awaited.pop(namespec, None)


class ProcessAlerts:
    """The process state machine. `watched`: the records a timer may act on (pending exit, failing
    while running, brake, backoff), so an event costs O(1) with 1000 programs."""

    def __init__(self, settings: AlertSettings, records: dict[str, ProcessRecord], policies: PolicyBook,
                 book: AlertBook, health: HealthTracker, actions: OwnActions, holds: HoldBook,
                 guard: RemediationGuard, brake: CrashLoopBrake, quorum: QuorumWatch, own_namespec: str,
                 dependants_coming: Callable[[str, float], bool] = lambda ns, running_for: False) -> None:
        self.settings, self.records, self.policies, self.book = settings, records, policies, book
        self.dependants_coming = dependants_coming  # a need's resolution waits for those lookout brings back
        self.health, self.actions, self.holds, self.guard = health, actions, holds, guard
        self.brake, self.quorum, self.own_namespec = brake, quorum, own_namespec
        self.pending = Pending(unconfirmed=set(records))
        for rec in records.values():  # the config is read once, at start: must_run may be gone from it since
            if rec.down_since is not None and not policies.lookup(rec.namespec).must_run:
                rec.down_since = None
        self.watched = {r.namespec for r in records.values() if needs_watch(r)}

    # ---- events ---------------------------------------------------------------------------

    def on_process_state(self, ev: ProcessStateEvent, now: float, out: Outcome, *, stopping: bool) -> None:
        rec = self.record(ev.group, ev.name)
        pending = self.pending
        if ev.state == "STARTING":
            pending.unconfirmed.discard(rec.namespec)  # a new process: its RUNNING event brings its pid
        pending.stable_checks.discard(rec.namespec)  # news: a stable run is judged afresh
        pending.stable_not_before.pop(rec.namespec, None)
        pending.unheard_since.pop(rec.namespec, None)
        restart = SUPERVISORD if ev.state == "STARTING" and ev.from_state in ("EXITED", "BACKOFF") else ""
        out.history.append(HistoryEntry(now, rec.namespec, "state", ev.describe(), restart=restart))
        rec.state, rec.state_since, rec.event_at, rec.present = ev.state, now, now, True
        rec.down_since = None  # (set again below by an expected exit of a must_run program)
        rec.last_exit_expected = ev.expected if ev.state == "EXITED" else None
        rec.pid = ev.pid if ev.state in LIVE_STATES else None
        if rec.pid:
            rec.event_pid = rec.pid
        state = ev.state
        if state == "STARTING":
            rec.last_start, rec.running_since = now, None
            out.start_lookups.append(rec.namespec)
            own = ev.from_state == "EXITED" and rec.action is not None and rec.action.step == START  # (a need's)
            if ev.from_state in ("EXITED", "BACKOFF") and not own:
                rec.restarts += 1
            elif (ev.from_state in ("STOPPED", "FATAL") or own) and self.actions.started(rec, now, out) == OPERATOR:
                self.operator_started(rec, now, out)  # a start call by hand (or at boot), not lookout's
            rec.remediation_wanted, rec.stopped_by = "", ""  # a new process: judged afresh
            self.health.reset(rec.namespec, out)  # every start: counts from zero, the grace again
            if rec.pending_exit_at is not None:  # the unexpected exit was respawned
                rec.pending_exit_at = None
                pending.confirming.discard(rec.namespec)
                pending.exit_sightings.pop(rec.namespec, None)
                crashed = self.book.get(PROCESS, rec.namespec)
                if crashed is not None and crashed.kind == CRASHED:  # again, below the crash-loop threshold:
                    self.book.update(PROCESS, rec.namespec, now, out)  # one update (the notifier: per group_interval)
                else:
                    self.raise_(rec, CRASHED, now, out)
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
            pending.exits_awaited.setdefault(rec.namespec, []).append((pid, now, rec.last_run_seconds))
            out.exit_lookups.append((rec.namespec, pid))
            if state == "BACKOFF" or ev.expected is False:
                rec.unexpected_exits += 1
                if state == "EXITED":
                    rec.pending_exit_at = now
                self._failure(rec, now, out)
            elif not stopping and self.policies.lookup(rec.namespec).must_run:
                rec.down_since = now  # down whatever the exit code: an alert after its grace (on_time)
        elif state == "FATAL":
            rec.fatals += 1
            rec.pending_exit_at = None
            self.raise_(rec, FATAL, now, out)
        elif state == "STOPPED":
            rec.pending_exit_at, rec.running_since = None, None
            if stopping:
                pass  # shutdown or reload: supervisord moves processes around on purpose
            else:
                who = self.actions.stopped(rec, ev.pid or 0, now, out)
                if who == OPERATOR:  # the problem is theirs now
                    self.operator_stopped(rec, now, out)
                elif who == LOOKOUT:
                    rec.stopped_by = LOOKOUT  # its alert says why
        self.touch(rec, out)
        self.refresh_quorum(rec, now, out)

    def operator_stopped(self, rec: ProcessRecord, now: float, out: Outcome) -> None:
        """An operator's stop: their alerts close quietly-ish ("stopped"), lookout lets go of it."""
        rec.stopped_by, rec.operator_at = OPERATOR, now
        # ("stopped" does not resolve "it is stopped": that one waits for supervisord to show it running)
        self.book.close_all(rec.namespec, now, out, "stopped", notify=True, keep=lambda a: a.kind == LEFT_STOPPED)
        reset_failures(rec)
        self._operator_took_over(rec, out)

    def operator_started(self, rec: ProcessRecord, now: float, out: Outcome) -> None:
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
        begin_episode(rec, now)
        alert = self.book.get(PROCESS, rec.namespec)
        if alert is not None:
            alert.failures += 1
            alert.updated_at = now
            out.alerts[alert.key] = alert
        if not rec.crash_looping and len(rec.failures) >= loop.restarts:
            rec.crash_looping = True
            if not self.brake.engage(rec, loop, now, out):  # "stop" raises BRAKED itself
                self.raise_(rec, CRASH_LOOP, now, out)
                self.brake.start(rec, loop, now, out)
        elif rec.brake_delay and loop.action == "backoff" and rec.brake_resume_at is None:
            self.brake.hold(rec, loop, now, out)  # (while the brake waits, a failure is news from before its stop)
        elif rec.crash_looping and loop.action == "stop" and not rec.braked:
            self.brake.engage(rec, loop, now, out)  # (the config asks for the stop brake only now)

    def raise_(self, rec: ProcessRecord, kind: str, now: float, out: Outcome, detail: str = "", *,
               unseen: bool = False) -> None:
        """unseen: found by a reconcile, not seen happen: failing since supervisord's own time of it
        (its state_since), "or earlier"."""
        unseen = unseen and rec.failing_since is None  # (an episode seen begin stays as seen)
        begin_episode(rec, min(rec.state_since or now, now) if unseen else now)
        policy = self.policies.lookup(rec.namespec)
        if policy.ignore or rec.namespec == self.own_namespec:
            return  # we cannot usefully alert on our own death: the exporter's heartbeat does
        alert = self.book.raise_(PROCESS, rec.namespec, kind, policy.severity_for(kind), now, out,
                                 opened_at=rec.failing_since, failures=len(rec.failures),
                                 restarts_at_open=rec.restarts_before_failing, tags=policy.tags, detail=detail)
        if alert is not None and unseen and alert.opened_at == rec.failing_since:
            alert.at_least = True  # (its page says "or earlier")

    # ---- time -----------------------------------------------------------------------------

    def on_time(self, rec: ProcessRecord, now: float, out: Outcome) -> None:
        """The exit grace, a must_run program's grace and the stable run: each is asked of
        supervisord (process_answers.py decides)."""
        s, ns, pending = self.settings, rec.namespec, self.pending
        if rec.down_since is not None and ns not in pending.confirming \
                and now - rec.down_since >= self.policies.lookup(ns).grace:
            pending.confirming.add(ns)
            out.reconcile = f"confirm that {ns} is still down"
        if rec.pending_exit_at is not None and ns not in pending.confirming \
                and now - rec.pending_exit_at >= s.exit_grace:
            # No STARTING yet. In a storm it may just be queued behind hundreds of events,
            # so ask supervisord rather than guess.
            pending.confirming.add(ns)
            out.reconcile = f"confirm whether {ns} was respawned"
        if rec.failing_since is not None and rec.state == "RUNNING" and rec.running_since is not None \
                and now - rec.running_since >= s.stable_after and ns not in pending.stable_checks \
                and now >= pending.stable_not_before.get(ns, now) \
                and not self.dependants_coming(ns, now - rec.running_since):  # (on_time runs every loop pass)
            pending.stable_checks.add(ns)  # resolved if supervisord agrees
            out.reconcile = f"confirm that {ns} runs stably"

    def deadlines(self, rec: ProcessRecord) -> list[float]:
        """When on_time could decide something about rec."""
        s, ns, pending, times = self.settings, rec.namespec, self.pending, []
        if rec.pending_exit_at is not None and ns not in pending.confirming:
            times.append(rec.pending_exit_at + s.exit_grace)
        if rec.down_since is not None and ns not in pending.confirming:
            times.append(rec.down_since + self.policies.lookup(ns).grace)
        if rec.failing_since is not None and rec.state == "RUNNING" and rec.running_since \
                and ns not in pending.stable_checks and not self.dependants_coming(ns, 0.0):
            times.append(max(rec.running_since + s.stable_after, pending.stable_not_before.get(ns, 0.0)))
        return times

    # ---- bookkeeping ----------------------------------------------------------------------

    def refresh_quorum(self, rec: ProcessRecord, now: float, out: Outcome) -> None:
        if self.policies.group_rule(rec.group) is not None:
            self.quorum.refresh(self.records, (rec.group,), now, out)

    def record(self, group: str, name: str) -> ProcessRecord:
        ns = f"{group}:{name}"
        rec = self.records.get(ns)
        if rec is None:
            rec = self.records[ns] = ProcessRecord(group=group, name=name)
        return rec

    def touch(self, rec: ProcessRecord, out: Outcome) -> None:
        """rec changed: persist it, and watch it while a timer may act on it."""
        out.records[rec.namespec] = rec
        if needs_watch(rec):
            self.watched.add(rec.namespec)
        else:
            self.watched.discard(rec.namespec)


def needs_watch(rec: ProcessRecord) -> bool:
    return (rec.pending_exit_at is not None or rec.failing_since is not None or rec.brake_resume_at is not None
            or bool(rec.brake_delay) or bool(rec.remediation_wanted) or rec.down_since is not None)


def begin_episode(rec: ProcessRecord, now: float) -> None:
    if rec.failing_since is None:
        rec.failing_since = now
        # A crash is noticed at EXITED, its restart is counted at the STARTING after it.
        rec.restarts_before_failing = rec.restarts


def reset_failures(rec: ProcessRecord) -> None:
    rec.failures, rec.failing_since, rec.crash_looping = [], None, False
