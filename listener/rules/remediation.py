"""What lookout may do to a process, and when it must not. Pure.

RemediationGuard, for probes with action = "restart" or "stop":
- never while supervisord stops or reloads, never on lookout's own processes (protected), one
  action at a time per process; dry_run decides and alerts ("would restart") but never acts;
- at most max_restarts restarts by lookout per process within `within`, each at least
  backoff x 2^(n-1) (up to backoff_max) after the previous one; the one after that is refused
  with one critical "remediation exhausted" alert, and lookout stops acting on it until an
  operator stops, starts or restarts it (Monit's "3 restarts within 5 cycles then unmonitor",
  systemd's StartLimitBurst);
- a lookout action's STOPPED and STARTING events are lookout's (expect_*), so they are not taken
  for an operator's.

CrashLoopBrake, for supervisord's own endless autorestart (crash_loop.action):
- "stop": stop it, one critical alert that says how to resume (systemd's StartLimitBurst);
- "backoff": stop it after each failure and start it again after 10 s, 20 s, 40 s ... up to
  backoff_max; after reset_after RUNNING the wait starts from the beginning (CrashLoopBackOff).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from ..config import CrashLoop, ProbeSpec, RemediationSettings, format_duration
from .alerts import AlertBook
from .models import (
    BRAKED,
    EXHAUSTED,
    PROCESS,
    REMEDIATION,
    REMEDIATION_FAILED,
    Action,
    ActionResult,
    Outcome,
    ProcessRecord,
)
from .policy import PolicyBook

EXPECT_FOR = 600.0  # a STOPPED/STARTING of lookout's own action is expected at most this long
_SEQUENCE = itertools.count(1)


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def family_of(source: str) -> str:
    return f"health:{source[6:]}" if source.startswith("probe:") else PROCESS


class RemediationGuard:
    def __init__(self, settings: RemediationSettings, policies: PolicyBook, alerts: AlertBook,
                 stopping: Callable[[], bool]) -> None:
        self.settings, self.policies, self.alerts, self.stopping = settings, policies, alerts, stopping

    # ---- requests -----------------------------------------------------------------------

    def want(self, rec: ProcessRecord, spec: ProbeSpec, now: float, out: Outcome) -> None:
        """An unhealthy probe with action restart or stop asks lookout to act."""
        kind, source, ns = spec.action, f"probe:{spec.name}", rec.namespec
        fam = family_of(source)
        if kind == "alert" or self.stopping():
            return
        if rec.action_in_flight:  # asked again when its result is back (on_time)
            rec.remediation_wanted = source
            out.records[ns] = rec
            return
        if self.policies.protected(ns):
            self.alerts.update(fam, ns, now, out, action_taken="not restarted: lookout never acts on its own "
                                                             "processes (remediation.protected)", notify=False)
            return
        if self.settings.dry_run:
            out.remediations.append((ns, kind, "dry_run"))
            self.alerts.update(fam, ns, now, out, action_taken=f"would {kind} it (remediation.dry_run = true)")
            return
        if kind == "restart":
            if rec.remediation_exhausted:
                return
            recent = [t for t in rec.lookout_restarts if t > now - self.settings.within]
            if len(recent) >= self.settings.max_restarts:
                self._exhausted(rec, recent, now, out)
                return
            if rec.remediation_next_at is not None and now < rec.remediation_next_at:
                rec.remediation_wanted = source  # on_time acts when the backoff is over
                out.records[ns] = rec
                return
        self.act(rec, kind, source, f"{spec.name} probe unhealthy", spec.evidence, now, out)

    def act(self, rec: ProcessRecord, kind: str, source: str, reason: str, evidence: tuple[str, ...],
            now: float, out: Outcome) -> Action:
        action = Action(f"{int(now * 1000)}-{next(_SEQUENCE)}", rec.namespec, kind, reason, evidence, source)
        rec.action_in_flight, rec.remediation_wanted = action.id, ""
        if kind in ("restart", "stop"):
            rec.expect_stop_until = now + EXPECT_FOR
        if kind in ("restart", "start"):
            rec.expect_start_until = now + EXPECT_FOR
        if kind == "restart":
            rec.lookout_restarts = [t for t in rec.lookout_restarts if t > now - self.settings.within] + [now]
            delay = self.settings.backoff * 2 ** (len(rec.lookout_restarts) - 1)
            rec.remediation_next_at = now + min(self.settings.backoff_max, delay)
        if source != "brake":  # said now, so the alert tells it even if it resolves before the result
            self.alerts.update(family_of(source), rec.namespec, now, out, action_taken=self._said(rec, kind),
                               notify=False)
        out.actions.append(action)
        out.records[rec.namespec] = rec
        out.history.append((now, rec.namespec, "action", f"lookout {kind}s it: {reason}"))
        return action

    def _exhausted(self, rec: ProcessRecord, recent: list[float], now: float, out: Outcome) -> None:
        rec.remediation_exhausted, rec.remediation_wanted = True, ""
        out.records[rec.namespec] = rec
        out.remediations.append((rec.namespec, "restart", "exhausted"))
        self.alerts.raise_(
            REMEDIATION, rec.namespec, EXHAUSTED, "critical", now, out, tags=self.policies.lookup(rec.namespec).tags,
            detail=(f"remediation exhausted: lookout restarted it {len(recent)} time(s) within "
                    f"{format_duration(self.settings.within)} (remediation.max_restarts = {self.settings.max_restarts})"
                    f" and it is still unhealthy; lookout no longer acts on it. `supervisorctl restart "
                    f"{rec.namespec}` resets this."),
        )

    def on_time(self, rec: ProcessRecord, still_wanted: Callable[[str], ProbeSpec | None], now: float,
                out: Outcome) -> None:
        """A restart waited for its backoff (or for lookout's previous action): do it now if the
        probe still says so."""
        if not rec.remediation_wanted or rec.action_in_flight or now < (rec.remediation_next_at or 0.0):
            return
        spec = still_wanted(rec.remediation_wanted)
        rec.remediation_wanted = ""
        out.records[rec.namespec] = rec
        if spec is not None and rec.state == "RUNNING":
            self.want(rec, spec, now, out)

    # ---- results ------------------------------------------------------------------------

    def on_result(self, result: ActionResult, rec: ProcessRecord, source: str, now: float, out: Outcome) -> None:
        if rec.action_in_flight == result.id:
            rec.action_in_flight = ""
        if not result.stopped:
            rec.expect_stop_until = None  # no STOPPED event will come of it
        if not result.started:
            rec.expect_start_until = None
        out.records[rec.namespec] = rec
        out.remediations.append((rec.namespec, result.kind, "success" if result.ok else "failure"))
        out.history.append((now, rec.namespec, "action", f"lookout's {result.kind} "
                            + ("succeeded" if result.ok else f"failed: {result.detail}")))
        fam = family_of(source)
        if not result.ok:
            self.alerts.raise_(REMEDIATION, rec.namespec, REMEDIATION_FAILED, "critical", now, out,
                               tags=self.policies.lookup(rec.namespec).tags,
                               detail=f"lookout's {result.kind} failed: {result.detail}", evidence=result.evidence)
            return
        if source == "brake":
            return  # the brake's own alert text already says what it does and how to resume
        self.alerts.update(fam, rec.namespec, now, out, action_taken=self._said(rec, result.kind),
                           evidence=result.evidence)

    def _said(self, rec: ProcessRecord, kind: str) -> str:
        if kind == "restart":
            n, m = len(rec.lookout_restarts), self.settings.max_restarts
            return f"restarted by lookout, {ordinal(n)} of {m} allowed in {format_duration(self.settings.within)}"
        if kind == "stop":
            return f"stopped by lookout; resume with `supervisorctl start {rec.namespec}`"
        return "started again by lookout"

    @staticmethod
    def operator_took_over(rec: ProcessRecord) -> None:
        """An operator stopped, started or restarted it: budgets and brakes start over."""
        rec.lookout_restarts, rec.remediation_exhausted = [], False
        rec.remediation_next_at, rec.remediation_wanted = None, ""
        rec.braked, rec.brake_delay, rec.brake_resume_at = False, 0.0, None


class CrashLoopBrake:
    def __init__(self, guard: RemediationGuard, policies: PolicyBook, alerts: AlertBook) -> None:
        self.guard, self.policies, self.alerts = guard, policies, alerts

    def engage(self, rec: ProcessRecord, loop: CrashLoop, now: float, out: Outcome) -> bool:
        """The crash loop was just detected. "stop": raises BRAKED and stops it (returns True).
        "backoff" is started by start() once the crash-loop alert is open."""
        ns = rec.namespec
        if loop.action != "stop" or not self._may_act(rec):
            return False
        failures = f"{len(rec.failures)} failures within {format_duration(loop.within)}"
        self.alerts.raise_(PROCESS, ns, BRAKED, "critical", now, out, opened_at=rec.failing_since,
                           failures=len(rec.failures), restarts_at_open=rec.restarts_before_failing,
                           tags=self.policies.lookup(ns).tags,
                           detail=f"crash-loop brake: {failures}. Resume with `supervisorctl start {ns}`")
        if self.guard.settings.dry_run:
            out.remediations.append((ns, "stop", "dry_run"))
            self.alerts.update(PROCESS, ns, now, out, action_taken="would stop it (remediation.dry_run = true)",
                               notify=False)
            return True
        rec.braked = True
        self.guard.act(rec, "stop", "brake", f"crash loop: {failures}", (), now, out)
        return True

    def start(self, rec: ProcessRecord, loop: CrashLoop, now: float, out: Outcome) -> None:
        """"backoff", once the crash-loop alert is open: hold it with the first wait."""
        if loop.action != "backoff" or not self._may_act(rec):
            return
        if self.guard.settings.dry_run:
            out.remediations.append((rec.namespec, "stop", "dry_run"))
            self.alerts.update(PROCESS, rec.namespec, now, out, notify=False,
                               action_taken="would stop it and start it again with backoff (remediation.dry_run)")
            return
        rec.brake_delay = rec.brake_delay or loop.backoff
        self.hold(rec, loop, now, out)

    def _may_act(self, rec: ProcessRecord) -> bool:
        return not (self.guard.stopping() or self.policies.protected(rec.namespec) or rec.action_in_flight)

    def hold(self, rec: ProcessRecord, loop: CrashLoop, now: float, out: Outcome) -> None:
        """"backoff": stop it now, start it again after the current wait; the next wait doubles."""
        if rec.action_in_flight or self.guard.stopping():
            return
        delay = rec.brake_delay
        rec.braked, rec.brake_resume_at = True, now + delay
        rec.brake_delay = min(loop.backoff_max, delay * 2)
        self.guard.act(rec, "stop", "brake", f"crash-loop backoff: start again in {format_duration(delay)}", (),
                       now, out)
        self.alerts.update(PROCESS, rec.namespec, now, out, notify=False,
                           action_taken=f"crash-loop backoff: stopped by lookout, started again in "
                                        f"{format_duration(delay)} (waits double up to "
                                        f"{format_duration(loop.backoff_max)})")

    def on_time(self, rec: ProcessRecord, loop: CrashLoop, now: float, out: Outcome) -> None:
        if rec.brake_resume_at is not None and now >= rec.brake_resume_at and not rec.action_in_flight:
            rec.brake_resume_at, rec.braked = None, False
            if self.guard.stopping() or rec.state not in ("STOPPED", "EXITED", "FATAL", "BACKOFF"):
                out.records[rec.namespec] = rec  # it is running again anyway (an operator started it)
                return
            self.guard.act(rec, "start", "brake", "crash-loop backoff over", (), now, out)
        elif (rec.brake_delay and rec.brake_resume_at is None and rec.state == "RUNNING"
              and rec.running_since is not None and now - rec.running_since >= loop.reset_after):
            rec.brake_delay = 0.0  # stable long enough: the next crash loop starts from `backoff`
            out.records[rec.namespec] = rec

    @staticmethod
    def deadline(rec: ProcessRecord, loop: CrashLoop) -> float | None:
        if rec.brake_resume_at is not None:
            return rec.brake_resume_at
        if rec.brake_delay and rec.state == "RUNNING" and rec.running_since is not None:
            return rec.running_since + loop.reset_after
        return None
