"""Every alert kind in one table: how it ranks, how bad it is by default, how it is said, and
what Alertmanager calls it.

Adding a kind is one row here (and the rule that raises it): the rules read its rank and default
severity, the human message its wording, the Alertmanager target its alertname. Nothing here
does I/O, so the rules stay pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import (
    BELOW_QUORUM,
    BRAKED,
    CHECK_DOWN,
    CRASH_LOOP,
    CRASHED,
    EXHAUSTED,
    EXITED,
    FATAL,
    LEFT_STOPPED,
    NEED_DOWN,
    NOT_RUNNING,
    REMEDIATION_FAILED,
    RUNS_TWICE,
    UNHEALTHY,
    WAITING,
)


@dataclass(frozen=True)
class AlertKind:
    """One kind of alert, everything that differs between kinds.

    rank: within a family an open alert only escalates, to a kind of a higher rank (a crash
    becomes a crash loop, never the other way round). severity: unless a program's policy says
    otherwise. what: the headline's verb phrase ("feed <what> on vm"). problem: what it was, in a
    resolution ("after <problem>; down 2m"). alertname: its Alertmanager label.
    """

    name: str
    rank: int
    severity: str
    what: str
    problem: str
    alertname: str


KINDS: dict[str, AlertKind] = {k.name: k for k in (
    AlertKind(CRASHED, 1, "warning", "crashed and was restarted", "a crash", "SupervisorProcessCrashed"),
    AlertKind(CRASH_LOOP, 2, "critical", "is crash-looping", "a crash loop", "SupervisorProcessCrashLooping"),
    AlertKind(FATAL, 3, "critical", "gave up starting (FATAL)", "a failed start (FATAL)", "SupervisorProcessFatal"),
    AlertKind(EXITED, 3, "critical", "exited and will not be restarted", "an unexpected exit",
              "SupervisorProcessExited"),
    AlertKind(NOT_RUNNING, 3, "critical", "is not running, and it must run", "being down (must_run)",
              "SupervisorProcessMustRun"),
    AlertKind(BRAKED, 3, "critical", "was stopped by lookout's crash-loop brake", "a crash loop stopped by the brake",
              "SupervisorProcessBraked"),
    AlertKind(UNHEALTHY, 1, "warning", "is unhealthy", "a failing health probe", "SupervisorProcessUnhealthy"),
    AlertKind(REMEDIATION_FAILED, 1, "critical", "could not be restarted by lookout", "a failed restart by lookout",
              "SupervisorRemediationFailed"),
    AlertKind(EXHAUSTED, 2, "critical", "is beyond lookout's restart budget (remediation exhausted)",
              "an exhausted restart budget", "SupervisorRemediationExhausted"),
    AlertKind(BELOW_QUORUM, 1, "critical", "is below quorum", "too few processes running",
              "SupervisorGroupBelowQuorum"),
    AlertKind(LEFT_STOPPED, 2, "critical", "is stopped: lookout's action on it was cut short",
              "a program left stopped by an interrupted action of lookout", "SupervisorRemediationInterrupted"),
    AlertKind(RUNS_TWICE, 1, "critical", "runs more than once (left running by a supervisord that died)",
              "a program running twice", "SupervisorProcessRunsTwice"),
    AlertKind(WAITING, 1, "warning", "is still waiting for its needs to start", "a start waiting for its needs",
              "LookoutDependencyWaiting"),
    AlertKind(CHECK_DOWN, 1, "critical", "is down", "a failing check", "LookoutCheckDown"),
    AlertKind(NEED_DOWN, 1, "critical", "is down, and programs need it", "a need down", "LookoutNeedDown"),
)}
