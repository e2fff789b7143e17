"""lookout's own actions on a process, one supervisord call at a time. Pure.

An action (restart, stop, start) is a short sequence of steps, each one call made by the
executor thread: the evidence command, stopProcess, startProcess. Each step's answer decides the
next, so what lookout did is what supervisord answered to lookout's own call, never a guess from
timing (events carry no actor: an operator's stop and lookout's look the same):

- A stop is lookout's only if its own stopProcess call stopped the process. NOT_RUNNING means an
  operator (or a crash) came first: the action is called off.
- A start goes ahead only while the process is still the one lookout's own stop stopped (its
  supervisord `start` unchanged since: nobody started it meanwhile), and is lookout's only if its
  own startProcess call started it.
- A STOPPED or STARTING event that arrives while the call is in flight is attributed when the
  call's answer comes (`seen`); one that arrives after the answer is lookout's (`own_event_due`).
- An operator's stop or start at any moment, or an operator's hold, calls the action off.
- Every step is committed before the next one is handed out. A listener that died in the middle
  finishes a restart whose stop was confirmed, and says in a critical alert when it cannot know
  whose a stop was. A program lookout stopped is never silently left STOPPED.
"""

from __future__ import annotations

from collections.abc import Callable

from ...config import RemediationSettings
from .action_words import answered, doing, done
from .alerts import AlertBook
from .kinds import KINDS
from .models import (
    ALREADY_STARTED,
    DIED,
    DONE,
    EVIDENCE,
    LEFT_STOPPED,
    LOOKOUT_RESTART,
    PROCESS,
    REMEDIATION,
    REMEDIATION_FAILED,
    START,
    STOP,
    Action,
    ActionResult,
    DueEvent,
    HistoryEntry,
    Outcome,
    PendingAction,
    ProcessRecord,
    SeenEvent,
    display_name,
)
from .own_events import STALE_START, STALE_STOP, expect, expected
from .policy import PolicyBook

DOWN_STATES = ("STOPPED", "EXITED", "FATAL")
OPERATOR, LOOKOUT, PENDING, UNKNOWN = "operator", "lookout", "pending", "unknown"  # whose event it was


def family_of(source: str) -> str:
    """The alert that tells what lookout did: the probe's own, or the process alert (the brake)."""
    return f"health:{source[6:]}" if source.startswith("probe:") else PROCESS


class OwnActions:
    def __init__(self, settings: RemediationSettings, policies: PolicyBook, alerts: AlertBook,
                 held: Callable[[str], bool], stopping: Callable[[], bool],
                 still_unhealthy: Callable[[str, str], bool],
                 need_down: Callable[[str], str] = lambda ns: "") -> None:
        self.settings, self.policies, self.alerts, self.held = settings, policies, alerts, held
        self.stopping, self.still_unhealthy, self.need_down = stopping, still_unhealthy, need_down

    # ---- beginning, and the next step ---------------------------------------------------

    def begin(self, rec: ProcessRecord, kind: str, source: str, reason: str, evidence: tuple[str, ...],
              now: float, out: Outcome, *, any_run: bool = False) -> PendingAction:
        """Start an action: its first step goes to the executor once this outcome is committed. A stop
        is of the process judged (its pid), or with any_run of whichever runs (the brake: a crash loop
        respawns it all the time)."""
        pid = 0 if any_run or kind == "start" else (rec.pid or 0)
        rec.actions_begun += 1  # (with the decision time: unique across the store's life, a process removed too)
        action = PendingAction(f"{rec.namespec}#{rec.actions_begun}@{int(now * 1000)}", kind, source, reason, pid,
                               "", now)
        if kind == "start" and rec.state in ("FATAL", "EXITED"):  # as found: FATAL (the brake), EXITED (a need's)
            action.expect = rec.state
        rec.action, rec.remediation_wanted = action, ""
        first = START if kind == "start" else (EVIDENCE if evidence else STOP)
        self._step(rec, action, first, out, evidence)
        out.history.append(HistoryEntry(now, rec.namespec, "action", f"lookout begins to {kind} it: {reason}"))
        if source.startswith("probe:"):
            alert = self.alerts.update(family_of(source), rec.namespec, now, out, notify=False, log=False,
                                       action_taken=doing(rec, kind, self.settings))
            if alert is not None:
                alert.acting_since = now  # its page waits for the result: one message for the decision
        return action

    def _acted(self, rec: ProcessRecord, a: PendingAction, out: Outcome) -> None:
        """The action's result is known (or never will be): its alert's page need not wait any more."""
        alert = self.alerts.get(family_of(a.source), rec.namespec)
        if alert is not None and alert.acting_since is not None:
            alert.acting_since = None
            out.alerts[alert.key] = alert

    def _step(self, rec: ProcessRecord, a: PendingAction, step: str, out: Outcome,
              evidence: tuple[str, ...] = ()) -> None:
        a.step, a.seen = step, []
        out.actions.append(Action(a.id, rec.namespec, step, a.kind, a.reason, pid=a.pid if step == STOP else 0,
                                  mark=rec.own_stop_mark if step == START else 0.0, evidence=evidence,
                                  source=a.source, expect=a.expect))
        out.records[rec.namespec] = rec

    # ---- answers from the executor --------------------------------------------------------

    def on_result(self, result: ActionResult, rec: ProcessRecord, now: float, out: Outcome) -> str:
        """Apply one step's answer. Returns OPERATOR_STOPPED/OPERATOR_STARTED when an event held back
        while the call was in flight turns out to be an operator's (the engine then hands the
        process over to them), CRASHED_AGAIN when the brake's start died (its next round), else ""."""
        a = rec.action
        if a is None or a.id != result.id or a.step != result.step:
            return ""  # the answer of an action that was already settled
        out.records[rec.namespec] = rec
        if result.step == EVIDENCE:
            a.evidence = result.evidence
            if not a.cancelled and a.source.startswith("probe:") and not self.still_unhealthy(rec.namespec, a.source):
                a.cancelled = "it recovered while lookout gathered its evidence"  # (a slow py-spy dump)
            if a.cancelled:
                self._refund(rec, a)
                return self._end(rec, a, "cancelled", f"called off: {a.cancelled}", now, out)
            self._step(rec, a, STOP, out)
            return ""
        if result.step == STOP:
            return self._stop_answered(result, rec, a, now, out)
        return self._start_answered(result, rec, a, now, out)

    def _stop_answered(self, result: ActionResult, rec: ProcessRecord, a: PendingAction, now: float,
                       out: Outcome) -> str:
        # Every STOPPED and operator start seen while the call was in flight, in order: the STOPPED
        # with the pid the call stopped is lookout's, the others an operator's.
        stops = [e for e in a.seen if e.state == "STOPPED"]
        last = a.seen[-1] if a.seen else None
        operator_stop_last = last is not None and last.state == "STOPPED" \
            and not (result.outcome == DONE and last.same_pid(result.pid))
        deferred = OPERATOR_STOPPED if operator_stop_last else ""
        if result.outcome == DONE:
            a.stopped, rec.own_stop_mark = True, result.mark
            ours_seen = any(e.same_pid(result.pid) for e in stops)
            if not ours_seen:  # its event is still on the way
                expect(rec, DueEvent("STOPPED", result.pid, a.since))
            if not operator_stop_last:
                rec.stopped_by = LOOKOUT
            out.history.append(HistoryEntry(now, rec.namespec, "action", "stopped by lookout's own call"))
            if ours_seen and not operator_stop_last and rec.operator_at >= a.since:
                self._end(rec, a, "cancelled", "its stop crossed an operator's start", now, out)
                self._undo(rec, now, out)
                return deferred
            down = self.need_down(rec.namespec) if a.kind == "restart" and a.source.startswith("probe:") else ""
            if down and not a.cancelled:  # a need went down during its stop: the need's recovery starts it
                self._refund(rec, a)
                a.cancelled = f"its need {down} went down meanwhile; lookout starts it once the need is back"
            if a.kind == "restart" and not a.cancelled and not self.held(rec.namespec):
                self._step(rec, a, START, out)
                return deferred
            if a.kind == "restart":  # called off after its stop: it stays stopped, and the alert says so
                why = a.cancelled or "held by an operator (`lookout hold`)"
                if self.held(rec.namespec) and not operator_stop_last:  # the rest of it, on release (remediation)
                    rec.remediation_wanted = a.source
                    why += f"; `lookout release {display_name(rec.namespec)}` starts it again"
                self._end(rec, a, "cancelled", f"stopped by lookout, not started again: {why}", now, out)
                return deferred
            rec.remediation_wanted = ""  # stopped as lookout meant: nothing of a restart is owed
            self._end(rec, a, "success", "", now, out)
            return deferred
        if result.outcome == "failed":  # an event seen meanwhile stays unattributed: nobody is sure
            self._end(rec, a, "failure", f"its stop failed: {result.detail}", now, out)
            return ""
        self._refund(rec, a)
        if not deferred and self._brake_found_it_fatal(rec, a, result):
            # Down already: supervisord gave up on it. The brake's wait goes on, and its start after it
            # (lookout's cycle, not an operator's verdict): only while nobody starts it meanwhile (mark).
            rec.stopped_by, rec.own_stop_mark, rec.remediation_wanted = LOOKOUT, result.mark, ""
            self._end(rec, a, "cancelled", "not needed: it is FATAL (supervisord gave up on it); the crash-loop "
                                           "brake starts it again after its wait", now, out)
            return ""
        self._end(rec, a, "cancelled", f"called off: {a.cancelled or answered(result)}", now, out)
        return deferred

    def _brake_found_it_fatal(self, rec: ProcessRecord, a: PendingAction, result: ActionResult) -> bool:
        """The backoff brake's stop found the program FATAL (a crash loop at boot ends there), with no
        operator's command since the brake decided."""
        return (a.source == "brake" and not a.cancelled and result.state == "FATAL" and bool(result.mark)
                and rec.brake_resume_at is not None and rec.operator_at < a.since)

    def _undo(self, rec: ProcessRecord, now: float, out: Outcome) -> None:
        """lookout's stop (the brake's: whichever run there is) landed just after an operator's start,
        against what the operator did. lookout's own call stopped it, so lookout starts it again."""
        rec.braked, rec.brake_resume_at = False, None
        if not self.held(rec.namespec) and not self.stopping():  # (a reload starts everything anyway)
            self.begin(rec, "start", "undo", "lookout's stop crossed an operator's start", (), now, out)

    def _start_answered(self, result: ActionResult, rec: ProcessRecord, a: PendingAction, now: float,
                        out: Outcome) -> str:
        seen_start = a.seen == [SeenEvent("STARTING")]
        if result.outcome == DIED:  # lookout's call started it (its STARTING is lookout's), and it died again
            if not seen_start:
                expect(rec, DueEvent("STARTING", 0, a.since))
            rec.stopped_by = ""
            if a.cancelled:
                self._end(rec, a, "cancelled", f"it died again within its startsecs; {a.cancelled} during "
                                               "lookout's start", now, out)
                return ""
            if a.source == "brake":  # the crash loop goes on: the brake's next round (engine)
                self._end(rec, a, "failure", f"started again by lookout's crash-loop brake, and it died again "
                                             f"({result.state})", now, out, quiet=True)
                return CRASHED_AGAIN
            quiet = a.source == "dependency"  # its own failure, or its need's again: their alerts say which
            self._end(rec, a, "failure", f"stopped by lookout, then its start failed: {result.detail}", now, out,
                      quiet=quiet)
            return ""
        if a.source == "dependency" and result.outcome not in (DONE, ALREADY_STARTED, "moved_on") and not a.cancelled:
            self._end(rec, a, "failure", f"lookout's start for its needs failed: {answered(result)}", now, out,
                      quiet=True)  # (the need went away again, or it cannot start: its alerts say so)
            return ""
        if result.outcome == DONE and not a.cancelled:
            if not seen_start:
                expect(rec, DueEvent("STARTING", 0, a.since))
            rec.stopped_by = ""
            self._end(rec, a, "success", "", now, out)
            return ""
        if result.outcome == DONE:  # it runs, but an operator (stop, restart, hold) acted during the start:
            if not seen_start:  # lookout does not claim it, and never stops it again
                expect(rec, DueEvent("STARTING", 0, a.since))
            self._end(rec, a, "cancelled", f"it runs; {a.cancelled} during lookout's start", now, out)
            return ""
        if result.outcome in (ALREADY_STARTED, "moved_on") or a.cancelled:
            self._end(rec, a, "cancelled", f"not started by lookout: {a.cancelled or answered(result)}", now, out)
            return OPERATOR_STARTED if seen_start and result.outcome != DONE else ""
        self._end(rec, a, "failure", f"stopped by lookout, then its start failed: {result.detail}", now, out)
        return OPERATOR_STARTED if seen_start else ""

    def _end(self, rec: ProcessRecord, a: PendingAction, result: str, detail: str, now: float,
             out: Outcome, quiet: bool = False) -> str:
        """The action is over: count it, and say what happened in its alert and the history (quiet: the
        history only; the process's own alert tells the rest)."""
        rec.action = None
        out.records[rec.namespec] = rec
        out.remediations.append((rec.namespec, a.kind, result))
        self._acted(rec, a, out)
        ns, fam = rec.namespec, family_of(a.source)
        tags = self.policies.lookup(ns).tags
        if quiet:
            out.history.append(HistoryEntry(now, ns, "action", detail))
            return ""
        if result == "failure":
            out.history.append(HistoryEntry(now, ns, "action", f"lookout's {a.kind} failed: {detail}"))
            self.alerts.raise_(REMEDIATION, ns, REMEDIATION_FAILED, KINDS[REMEDIATION_FAILED].severity, now, out,
                               tags=tags, detail=f"lookout's {a.kind} failed: {detail}", evidence=a.evidence)
            return ""
        if result == "cancelled":
            out.history.append(HistoryEntry(now, ns, "action", f"lookout's {a.kind}: {detail}"))
            if a.source.startswith("probe:"):  # people hear of it when lookout's stop left it stopped
                self.alerts.update(fam, ns, now, out, action_taken=f"lookout's {a.kind}: {detail}",
                                   notify=a.stopped and rec.state != "RUNNING", log=False)
            return ""
        said = done(rec, a.kind, self.settings, a.source)
        restart = LOOKOUT_RESTART if a.kind == "restart" and a.source != "brake" else ""
        out.history.append(HistoryEntry(now, ns, "action", said, restart=restart))
        if a.source.startswith("probe:"):
            self.alerts.update(fam, ns, now, out, action_taken=said, evidence=a.evidence, log=False)
        return ""

    def _refund(self, rec: ProcessRecord, a: PendingAction) -> None:
        """A restart that never stopped anything does not spend the restart budget."""
        if a.kind == "restart" and a.source.startswith("probe:") and a.since in rec.lookout_restarts:
            rec.lookout_restarts.remove(a.since)

    # ---- events: whose were they? ---------------------------------------------------------

    def stopped(self, rec: ProcessRecord, pid: int, now: float, out: Outcome) -> str:
        """A STOPPED event (not during supervisord's own stop or reload): LOOKOUT, OPERATOR,
        PENDING (lookout's stop call is in flight: its answer tells) or UNKNOWN."""
        due = expected(rec)
        if due and due[0] == STALE_STOP:
            expected(rec, due[1:])
            return UNKNOWN  # from before supervisord's answer that settled an interrupted action
        if due and due[0].state == "STOPPED" and due[0].same_pid(pid):
            since = due[0].since
            expected(rec, due[1:])
            if rec.operator_at >= since and rec.action is None:
                self._undo(rec, now, out)
            return LOOKOUT
        a = rec.action
        if a is not None and a.interrupted:  # whose, nobody can say: supervisord's view settles it, asked now
            out.reconcile = out.reconcile or f"settle lookout's interrupted action on {rec.namespec}"
            return UNKNOWN  # (not at the periodic reconcile: its alert would wait up to a minute)
        if a is not None and a.step == STOP:
            a.seen = [*a.seen, SeenEvent("STOPPED", pid)]
            out.records[rec.namespec] = rec
            return PENDING
        if a is not None:
            self.cancel(rec, "an operator stopped it", now, out)
        return OPERATOR

    def started(self, rec: ProcessRecord, now: float, out: Outcome) -> str:
        """A STARTING from STOPPED or FATAL (a start call, never supervisord's autorestart)."""
        left = self.alerts.get(REMEDIATION, rec.namespec)
        if left is not None and left.kind == LEFT_STOPPED:  # closed when supervisord shows it RUNNING:
            out.reconcile = out.reconcile or f"confirm that {rec.namespec} runs again"  # events may be stale
        due = expected(rec)
        if due and due[0] == STALE_STOP:  # a stale STOPPED comes before any later start, or not at all
            due = expected(rec, due[1:])
        if due and due[0] == STALE_START:
            expected(rec, due[1:])
            return UNKNOWN
        if due and due[0].state == "STARTING":  # (behind lookout's own STOPPED still due: not this one)
            expected(rec, due[1:])
            return LOOKOUT
        a = rec.action
        if a is not None and a.interrupted:  # settled by supervisord's view, asked now (as in stopped)
            out.reconcile = out.reconcile or f"settle lookout's interrupted action on {rec.namespec}"
            return UNKNOWN
        if a is not None and a.step == START and not a.seen and not a.cancelled:
            a.seen = [SeenEvent("STARTING")]
            return PENDING
        if a is not None and a.step == STOP:
            a.seen = [*a.seen, SeenEvent("STARTING")]  # after an operator's start, a STOPPED may be lookout's again
        if a is not None:
            self.cancel(rec, "an operator started it", now, out)
        return OPERATOR

    def cancel(self, rec: ProcessRecord, why: str, now: float, out: Outcome) -> None:
        """Call off the action: no further step, and the executor skips the call of the step in
        flight if it has not made it yet; if it has, its answer still comes (and is attributed)."""
        a = rec.action
        if a is not None and not a.cancelled:
            a.cancelled = why
            out.records[rec.namespec] = rec
            out.cancelled.append(a.id)
            out.history.append(HistoryEntry(now, rec.namespec, "action", f"lookout's {a.kind} called off: {why}"))

    # ---- a listener that died in the middle of an action ------------------------------------

    def resume(self, rec: ProcessRecord, state: str, pid: int, start: float, now: float, out: Outcome) -> None:
        """After a listener restart, supervisord's view (a snapshot) of a process whose action was in
        flight: finish it, drop it, or say what lookout cannot know."""
        a = rec.action
        if a is None or not a.interrupted or state == "STOPPING":
            return  # STOPPING: its STOPPED event (or the next reconcile) decides
        if a.step == EVIDENCE or (a.step == STOP and state not in DOWN_STATES and pid == a.pid):
            self._refund(rec, a)
            self._settle(rec, a, "it did nothing before the listener restarted; the probes judge afresh", now, out)
        elif a.step == STOP and state in DOWN_STATES:
            self._left_stopped(rec, a, now, out)
        elif a.step == START and state == "STOPPED" and start == rec.own_stop_mark and not self.held(rec.namespec):
            a.interrupted = False
            expected(rec, [STALE_STOP])
            out.history.append(HistoryEntry(now, rec.namespec, "action", f"lookout finishes its {a.kind}, interrupted "
                                            "by the listener's restart: starting it again"))
            self._step(rec, a, START, out)
        else:
            self._settle(rec, a, f"the listener restarted meanwhile; it is {state} now", now, out, state)
            if a.step == START and rec.state == "STOPPED" and state not in DOWN_STATES:
                expected(rec, [STALE_START])  # perhaps the previous listener's own start: not an operator's

    def _settle(self, rec: ProcessRecord, a: PendingAction, why: str, now: float, out: Outcome,
                state: str = "") -> None:
        rec.action = None
        if state in DOWN_STATES:  # its STOPPED may still be on the way: nobody's (a later one needs a start first)
            expected(rec, [STALE_STOP])
        out.records[rec.namespec] = rec
        self._acted(rec, a, out)
        out.history.append(HistoryEntry(now, rec.namespec, "action", f"lookout's {a.kind} was interrupted: {why}"))

    def _left_stopped(self, rec: ProcessRecord, a: PendingAction, now: float, out: Outcome) -> None:
        """Stopped while the listener was gone in the middle of lookout's stop: whose stop it was cannot
        be known, so lookout does not start it; people hear of it."""
        rec.action, rec.stopped_by = None, LOOKOUT  # down, not deliberate
        rec.remediation_wanted = ""  # (whose stop is not known: lookout does not start it)
        expected(rec, [STALE_STOP])
        out.records[rec.namespec] = rec
        out.remediations.append((rec.namespec, a.kind, "interrupted"))
        self._acted(rec, a, out)
        ns = rec.namespec
        resume_due = a.source == "brake" and rec.brake_resume_at is not None
        if a.kind == "stop" and not resume_due:  # it was meant to stay stopped: it is
            said = "stopped; lookout's stop was interrupted by a listener restart"
            out.history.append(HistoryEntry(now, ns, "action", said))
            self.alerts.update(family_of(a.source), ns, now, out, action_taken=said, notify=False, log=False)
            return
        rec.brake_resume_at, rec.braked = None, False
        name = display_name(ns)
        goal = "start it again after the crash-loop backoff" if resume_due else f"{a.kind} it"
        self.alerts.raise_(
            REMEDIATION, ns, LEFT_STOPPED, KINDS[LEFT_STOPPED].severity, now, out,
            tags=self.policies.lookup(ns).tags,
            evidence=a.evidence,
            detail=(f"{name} is stopped. lookout was stopping it to {goal} ({a.reason}) when its listener "
                    f"stopped; lookout cannot tell whether that stop was its own or an operator's, so it does not "
                    f"start it. Start it: `supervisorctl start {name}`"
                    + ("." if self.held(ns) else f"; keep it down: `lookout hold {name}`.")),
        )


OPERATOR_STOPPED, OPERATOR_STARTED = "operator stopped", "operator started"
CRASHED_AGAIN = "crashed again"  # the brake's start died within its startsecs: the brake's next round
