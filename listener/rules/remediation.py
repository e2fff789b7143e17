"""What lookout may do about an unhealthy process, and when it must not. Pure.

RemediationGuard, for probes with action = "restart" or "stop":
- never while supervisord stops or reloads, never on lookout's own processes (protected), never on
  a process an operator holds (`lookout hold`), one action at a time per process; dry_run decides
  and alerts ("would restart") but never acts;
- a restart refused while held, waiting for its backoff or for lookout's action in flight is
  remembered (remediation_wanted, in the store) and asked again on release or when the wait ends,
  on the probe's judgement then (a restart cut after its stop by a hold is finished on release);
- only on a fresh judgement: failing results of the current process, observed by this listener
  since it started (health.HealthTracker decides that); a judgement from before a listener restart
  or a reload is shown, never acted on;
- at most max_restarts restarts by lookout per process within `within`, each at least
  backoff x 2^(n-1) (up to backoff_max) after the previous one; the one after that is refused
  with one critical "remediation exhausted" alert, and lookout stops acting on it until an
  operator stops, starts or restarts it (Monit's "3 restarts within 5 cycles then unmonitor",
  systemd's StartLimitBurst).
The action itself, step by step, is actions.OwnActions'.
"""

from __future__ import annotations

from collections.abc import Callable

from ...config import ProbeSpec, RemediationSettings, format_duration
from .actions import LOOKOUT, OwnActions, family_of
from .alerts import AlertBook
from .kinds import KINDS
from .models import EXHAUSTED, REMEDIATION, Outcome, ProcessRecord, display_name
from .policy import PolicyBook


class RemediationGuard:
    def __init__(self, settings: RemediationSettings, policies: PolicyBook, alerts: AlertBook, actions: OwnActions,
                 stopping: Callable[[], bool], held: Callable[[str], bool],
                 need_down: Callable[[str], str] = lambda ns: "") -> None:
        self.settings, self.policies, self.alerts, self.actions = settings, policies, alerts, actions
        self.stopping, self.held, self.need_down = stopping, held, need_down

    def want(self, rec: ProcessRecord, spec: ProbeSpec, now: float, out: Outcome) -> None:
        """A probe freshly judged this process unhealthy, and its action is restart or stop."""
        kind, source, ns = spec.action, f"probe:{spec.name}", rec.namespec
        fam = family_of(source)
        if kind == "alert" or self.stopping() or rec.state != "RUNNING":
            return
        if rec.action is not None:  # asked again when its result is back (on_time)
            rec.remediation_wanted = source
            out.records[ns] = rec
            return
        if self.policies.protected(ns):
            self.alerts.update(fam, ns, now, out, action_taken="not restarted: lookout never acts on its own "
                                                             "processes (remediation.protected)", notify=False)
            return
        down = self.need_down(ns)
        if down:  # its need's failure, not its own: nothing spent, judged afresh once the need is back
            rec.remediation_wanted = ""
            out.records[ns] = rec
            self.alerts.update(fam, ns, now, out, notify=False, action_taken=f"not {kind}ed: it needs {down}")
            return
        if self.held(ns):  # remembered (in the store): asked again on release, if the probe still says so
            rec.remediation_wanted = source
            out.records[ns] = rec
            release = f"`lookout release {display_name(ns)}`"
            self.alerts.update(fam, ns, now, out, notify=False,
                               action_taken=f"not {kind}ed: held by an operator ({release} lets lookout act again)")
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
            rec.lookout_restarts = recent + [now]  # spent now; refunded if it never stops anything
            delay = self.settings.backoff * 2 ** (len(rec.lookout_restarts) - 1)
            rec.remediation_next_at = now + min(self.settings.backoff_max, delay)
        self.actions.begin(rec, kind, source, f"{spec.name} probe unhealthy", spec.evidence, now, out)

    def _exhausted(self, rec: ProcessRecord, recent: list[float], now: float, out: Outcome) -> None:
        rec.remediation_exhausted, rec.remediation_wanted = True, ""
        out.records[rec.namespec] = rec
        out.remediations.append((rec.namespec, "restart", "exhausted"))
        self.alerts.raise_(
            REMEDIATION, rec.namespec, EXHAUSTED, KINDS[EXHAUSTED].severity, now, out,
            tags=self.policies.lookup(rec.namespec).tags,
            detail=(f"remediation exhausted: lookout restarted it {len(recent)} time(s) within "
                    f"{format_duration(self.settings.within)} (remediation.max_restarts = {self.settings.max_restarts})"
                    f" and it is still unhealthy; lookout no longer acts on it. `supervisorctl restart "
                    f"{display_name(rec.namespec)}` resets this."),
        )

    def on_time(self, rec: ProcessRecord, still_wanted: Callable[[str], ProbeSpec | None], now: float,
                out: Outcome) -> None:
        """A restart waited for its backoff, for lookout's previous action or for an operator's hold:
        do it now if a fresh judgement of the same process still says so. A restart whose stop was done
        when the hold came is finished: lookout starts what its own stop stopped (only while nobody
        started it since: the mark)."""
        source = rec.remediation_wanted
        if not source or rec.action is not None or self.held(rec.namespec):
            return
        if self.need_down(rec.namespec):  # a need went down meanwhile: judged afresh once it is back
            rec.remediation_wanted = ""
            out.records[rec.namespec] = rec
            return
        if rec.state == "STOPPED" and rec.stopped_by == LOOKOUT and not rec.braked:  # (the brake's stop stays)
            rec.remediation_wanted = ""
            out.records[rec.namespec] = rec
            spec = self.policies.probe(rec.namespec, source.removeprefix("probe:"))
            if spec is not None and spec.action == "restart" and not self.stopping():  # (a probe's stop stays)
                self.actions.begin(rec, "start", source, "the rest of its restart, held back by an operator's hold",
                                   (), now, out)
            return
        if now < (rec.remediation_next_at or 0.0):
            return
        spec = still_wanted(source)
        rec.remediation_wanted = ""
        out.records[rec.namespec] = rec
        if spec is not None and rec.state == "RUNNING":
            self.want(rec, spec, now, out)

    def deadline(self, rec: ProcessRecord) -> float | None:
        """When on_time may act on a wanted restart (never while held: release wakes it)."""
        if not rec.remediation_wanted or rec.action is not None or self.held(rec.namespec):
            return None
        return rec.remediation_next_at or 0.0

    @staticmethod
    def operator_took_over(rec: ProcessRecord) -> None:
        """An operator stopped, started or restarted it: budgets and brakes start over."""
        rec.lookout_restarts, rec.remediation_exhausted = [], False
        rec.remediation_next_at, rec.remediation_wanted = None, ""
        rec.braked, rec.brake_delay, rec.brake_resume_at = False, 0.0, None
