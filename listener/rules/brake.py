"""CrashLoopBrake: a brake on supervisord's endless autorestart (crash_loop.action). Pure.

- "stop": stop it, one critical alert that says how to resume (systemd's StartLimitBurst);
- "backoff": stop it after each failure and start it again after 10 s, 20 s, 40 s ... up to
  backoff_max; after reset_after RUNNING the wait starts from the beginning (Kubernetes'
  CrashLoopBackOff).
The program is STOPPED while the brake waits, so `supervisorctl stop` answers "not running": an
operator keeps it down with `lookout hold NAME` (and lets lookout go on with `lookout release`).
lookout starts it again only if its own stop stopped it and nobody started it since (actions).
The cycle is lookout's own: a program that went FATAL before the brake's stop (a crash loop at boot,
its dependency missing) is down already, and the brake starts it after the wait all the same (only
while nobody started it since); a start of the brake's that dies within startsecs is the crash loop
going on: the next round, not lookout's failure.
"""

from __future__ import annotations

from collections.abc import Callable

from ...config import CrashLoop, format_duration
from .actions import LOOKOUT, OwnActions
from .alerts import AlertBook
from .kinds import KINDS
from .models import BRAKED, PROCESS, Outcome, ProcessRecord, display_name
from .policy import PolicyBook


class CrashLoopBrake:
    def __init__(self, actions: OwnActions, policies: PolicyBook, alerts: AlertBook, dry_run: bool,
                 stopping: Callable[[], bool], held: Callable[[str], bool],
                 need_down: Callable[[str], str] = lambda ns: "") -> None:
        self.actions, self.policies, self.alerts, self.dry_run = actions, policies, alerts, dry_run
        self.stopping, self.held, self.need_down = stopping, held, need_down

    def engage(self, rec: ProcessRecord, loop: CrashLoop, now: float, out: Outcome) -> bool:
        """The crash loop was just detected. "stop": raises BRAKED and stops it (returns True).
        "backoff" is started by start() once the crash-loop alert is open."""
        ns = rec.namespec
        if loop.action != "stop" or not self._may_act(rec):
            return False
        failures = f"{len(rec.failures)} failures within {format_duration(loop.within)}"
        detail = f"crash-loop brake: {failures}. Resume with `supervisorctl start {display_name(ns)}`"
        open_ = self.alerts.get(PROCESS, ns)
        if open_ is not None and open_.kind == BRAKED:  # an operator started it, and it crash-looped again
            self.alerts.update(PROCESS, ns, now, out, detail=detail, notify=True,
                               action_taken="stopped again by the crash-loop brake after it was started again")
        else:
            self.alerts.raise_(PROCESS, ns, BRAKED, KINDS[BRAKED].severity, now, out, opened_at=rec.failing_since,
                               failures=len(rec.failures), restarts_at_open=rec.restarts_before_failing,
                               tags=self.policies.lookup(ns).tags, detail=detail)
        if self.dry_run:
            out.remediations.append((ns, "stop", "dry_run"))
            self.alerts.update(PROCESS, ns, now, out, action_taken="would stop it (remediation.dry_run = true)",
                               notify=False)
            return True
        rec.braked = True
        self.actions.begin(rec, "stop", "brake", f"crash loop: {failures}", (), now, out, any_run=True)
        return True

    def start(self, rec: ProcessRecord, loop: CrashLoop, now: float, out: Outcome) -> None:
        """"backoff", once the crash-loop alert is open: hold it with the first wait."""
        if loop.action != "backoff" or not self._may_act(rec):
            return
        if self.dry_run:
            out.remediations.append((rec.namespec, "stop", "dry_run"))
            self.alerts.update(PROCESS, rec.namespec, now, out, notify=False,
                               action_taken="would stop it and start it again with backoff (remediation.dry_run)")
            return
        rec.brake_delay = rec.brake_delay or loop.backoff
        self.hold(rec, loop, now, out)

    def _may_act(self, rec: ProcessRecord) -> bool:
        return not (self.stopping() or self.policies.protected(rec.namespec) or rec.action is not None
                    or self.held(rec.namespec) or bool(self.need_down(rec.namespec)))

    def hold(self, rec: ProcessRecord, loop: CrashLoop, now: float, out: Outcome) -> None:
        """"backoff": stop it now, start it again after the current wait; the next wait doubles."""
        if not self._may_act(rec):
            return
        delay = rec.brake_delay
        rec.braked, rec.brake_resume_at = True, now + delay
        rec.brake_delay = min(loop.backoff_max, delay * 2)
        self.actions.begin(rec, "stop", "brake", f"crash-loop backoff: start again in {format_duration(delay)}", (),
                           now, out, any_run=True)
        self.alerts.update(PROCESS, rec.namespec, now, out, notify=False,
                           action_taken=f"crash-loop backoff: stopped by lookout, started again in "
                                        f"{format_duration(delay)} (waits double up to "
                                        f"{format_duration(loop.backoff_max)}); to keep it stopped: "
                                        f"`lookout hold {display_name(rec.namespec)}`")

    def on_time(self, rec: ProcessRecord, loop: CrashLoop, now: float, out: Outcome) -> None:
        if rec.brake_resume_at is not None and now >= rec.brake_resume_at and rec.action is None:
            if self.held(rec.namespec):
                return  # the operator keeps it down; `lookout release` lets the brake start it
            rec.brake_resume_at, rec.braked = None, False
            if self.need_down(rec.namespec):
                out.records[rec.namespec] = rec
                return  # a need is down: the dependency's recovery starts it once the need is back
            out.records[rec.namespec] = rec
            if self.stopping() or rec.state not in ("STOPPED", "FATAL") or rec.stopped_by != LOOKOUT:
                return  # it runs again anyway, or lookout's stop (or its look at a FATAL one) was not the last word
            self.actions.begin(rec, "start", "brake", "crash-loop backoff over", (), now, out)
        elif (rec.brake_delay and rec.brake_resume_at is None and rec.state == "RUNNING"
              and rec.running_since is not None and now - rec.running_since >= loop.reset_after):
            rec.brake_delay = 0.0  # stable long enough: the next crash loop starts from `backoff`
            out.records[rec.namespec] = rec

    def deadline(self, rec: ProcessRecord, loop: CrashLoop) -> float | None:
        if rec.brake_resume_at is not None:
            return None if self.held(rec.namespec) else rec.brake_resume_at
        if rec.brake_delay and rec.state == "RUNNING" and rec.running_since is not None:
            return rec.running_since + loop.reset_after
        return None
