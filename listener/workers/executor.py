"""RemediationExecutor: the steps of lookout's own actions, on worker threads, never on the loop.

superlance's memmon and httpok stop and start in the event loop (a slow stop overflows the
event buffer, superlance PR #41) and do not check the result (a failed start leaves the program
silently STOPPED, superlance#43). Here each step runs off the loop and makes ONE call, whose
answer goes back to the rules (rules/actions.py), which decide the next step:

- evidence: the evidence command (bounded), its output kept for the alert;
- stop: getProcessInfo first (still the process lookout judged?), then stopProcess(wait=True):
  True means this call stopped it; NOT_RUNNING means someone else's stop came first;
- start: getProcessInfo first (still stopped as lookout's stop left it, or FATAL as the crash-loop
  brake found it; nobody started it since?), then startProcess(wait=True) and getProcessInfo:
  RUNNING, with its new pid; or DIED within its startsecs (its crash loop goes on).

No step retries or improvises: an answer it did not expect is reported as it is.
"""

from __future__ import annotations

import logging
import threading
import time
import xmlrpc.client
from collections.abc import Callable

from ...bounded import run_bounded
from ...config import RemediationSettings, format_duration
from ...rpc import ALREADY_STARTED as FAULT_ALREADY_STARTED
from ...rpc import NOT_RUNNING as FAULT_NOT_RUNNING
from ...rpc import SupervisorClient, SupervisorUnavailable, snapshot_from_info
from ...text import clean
from ..rules.models import (
    ALREADY_STARTED,
    DIED,
    DONE,
    EVIDENCE,
    FAILED,
    MOVED_ON,
    NOT_RUNNING,
    START,
    STOP,
    Action,
    ActionResult,
    ProcessSnapshot,
)
from .inbox import Inbox, Posted
from .thread import WorkerPool

log = logging.getLogger("lookout.remediate")

WAIT_TIMEOUT = 300.0  # stopwaitsecs and startsecs can be long; the call must outlast them
EVIDENCE_BYTES = 16384
STOPPABLE = ("RUNNING", "STARTING", "BACKOFF")  # what stopProcess accepts
RESTARTABLE = ("STOPPED", "FATAL", "EXITED")  # what lookout starts (as it left or found it, while `start` is its mark)
DIED_STATES = ("BACKOFF", "STARTING", "FATAL", "EXITED")  # after a start that failed: it ran, and died


class RemediationExecutor:
    def __init__(self, client: SupervisorClient, settings: RemediationSettings, inbox: Inbox[Posted],
                 workers: int = 4, on_death: Callable[[], None] = lambda: None) -> None:
        self.client = client.patient(WAIT_TIMEOUT)
        self.settings = settings
        self.inbox = inbox  # the loop's, shared with the other workers
        self._cancelled: set[str] = set()  # action ids called off by the rules: their calls not yet made are skipped
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when a step's answer is in the inbox
        self._in_flight = 0  # steps handed out whose answers are not in the inbox yet
        self.pool = WorkerPool("lookout-remediate", workers, on_death)

    def submit(self, action: Action, fill: Callable[[str], str] | None) -> None:
        if action.step != EVIDENCE:
            log.warning("lookout %s %s%s (%s): %s", "stops" if action.step == STOP else "starts", action.namespec,
                        " to restart it" if action.kind == "restart" else "", action.source, action.reason)
        with self._lock:
            self._in_flight += 1
        self.pool.submit(self._run, action, fill)

    def cancel(self, ids: list[str]) -> None:
        with self._lock:
            self._cancelled.update(ids)

    def _called_off(self, action: Action) -> bool:
        with self._lock:
            return action.id in self._cancelled

    def settle(self, timeout: float) -> bool:
        """Wait at most `timeout` seconds until every step handed out has answered (its result is in
        the inbox). A listener stopped gracefully in the middle of its own stop commits that answer
        before it exits: the next listener then knows the stop was lookout's. False: still in flight."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _run(self, action: Action, fill: Callable[[str], str] | None) -> None:
        try:
            result = self._do(action, fill)
        except Exception as exc:  # one step fails alone; the rules hear of it
            log.exception("lookout's %s of %s failed", action.step, action.namespec)
            result = ActionResult(action.id, action.namespec, action.step, FAILED, f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._cancelled.discard(action.id)
        self.inbox.post(result)  # before the count goes down: settle() finds it once idle
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def _do(self, action: Action, fill: Callable[[str], str] | None) -> ActionResult:
        if action.step == EVIDENCE:
            text = self._evidence([fill(a) for a in action.evidence]) if action.evidence and fill else ""
            return ActionResult(action.id, action.namespec, EVIDENCE, DONE, evidence=text)
        if action.step == STOP:
            return self._stop(action)
        return self._start(action)

    def _stop(self, action: Action) -> ActionResult:
        ns = action.namespec
        if self._called_off(action):
            return self._result(action, MOVED_ON, "called off before its call")
        before = self._info(ns)
        if isinstance(before, str):
            return self._result(action, MOVED_ON if "BAD_NAME" in before else FAILED, before)
        if before.state not in STOPPABLE or (action.pid and before.pid != action.pid):
            return self._result(action, MOVED_ON, f"it is {before.state}" + (f" (pid {before.pid})" if before.pid
                                                                               else ""), found=before)
        try:
            self.client.call("supervisor.stopProcess", ns, True)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode == FAULT_NOT_RUNNING:  # what it is now (FATAL: supervisord gave up meanwhile)
                now = self._info(ns)
                return self._result(action, NOT_RUNNING, "", found=now if not isinstance(now, str) else None)
            return self._result(action, FAILED, f"stop: {exc.faultString}")
        except SupervisorUnavailable as exc:
            return self._result(action, FAILED, f"stop: {exc}")
        # The run this call stopped, as supervisord left it (a crash loop may have respawned it between
        # the look before and the call): a later start by lookout goes ahead only while it is still so.
        after = self._info(ns)
        mark = after.start if not isinstance(after, str) and after.state == "STOPPED" else before.start
        return ActionResult(action.id, ns, STOP, DONE, pid=before.pid, mark=float(mark))

    def _start(self, action: Action) -> ActionResult:
        ns = action.namespec
        if self._called_off(action):
            return self._result(action, MOVED_ON, "called off before its call")
        before = self._info(ns)
        if isinstance(before, str):  # BAD_NAME: removed from supervisord's configuration meanwhile
            return self._result(action, MOVED_ON if "BAD_NAME" in before else FAILED, before)
        # As lookout left it: STOPPED by its stop, or FATAL as the brake found it (supervisord gave up, and the
        # brake decided for that state); and not started since
        if before.state != action.expect or (action.mark >= 0 and float(before.start) != action.mark):
            mine = action.expect == "STOPPED" and action.source != "dependency"  # (a restart's own stop)
            why = "stopped and started since" if before.state in RESTARTABLE else \
                "started since lookout stopped it" if mine else "started by someone else since lookout decided"
            return self._result(action, MOVED_ON, f"it is {before.state}, {why}")
        try:
            self.client.call("supervisor.startProcess", ns, True)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode == FAULT_ALREADY_STARTED:
                return self._result(action, ALREADY_STARTED, "")
            return self._start_failed(action, exc.faultString)
        except SupervisorUnavailable as exc:
            return self._result(action, FAILED, f"start: {exc}")
        after = self._info(ns)
        if isinstance(after, str) or after.state != "RUNNING":
            state = after if isinstance(after, str) else after.state
            return self._start_failed(action, f"started, but it is {state}")
        return ActionResult(action.id, ns, START, DONE, pid=after.pid)

    def _start_failed(self, action: Action, why: str) -> ActionResult:
        """startProcess(wait) also fails when someone stops the process during its startsecs
        (ABNORMAL_TERMINATION) or `supervisorctl update` removes it: that is not lookout's failure.
        A program that dies within its startsecs (BACKOFF, then supervisord's retries or FATAL) was
        started by this call: DIED, its crash loop goes on."""
        now = self._info(action.namespec)
        if isinstance(now, str) and "BAD_NAME" in now:
            return self._result(action, MOVED_ON, "it was removed from supervisord during lookout's start")
        if not isinstance(now, str) and now.state in ("STOPPING", "STOPPED"):
            return self._result(action, MOVED_ON, f"it was stopped during lookout's start ({now.state})")
        if not isinstance(now, str) and now.state in DIED_STATES:
            return self._result(action, DIED, f"start: {why}; it is {now.state}", found=now)
        return self._result(action, FAILED, f"start: {why}")

    def _info(self, namespec: str) -> ProcessSnapshot | str:
        """supervisord's view of one process, or why it cannot be had."""
        try:
            snap = snapshot_from_info(self.client.call("supervisor.getProcessInfo", namespec))
        except (xmlrpc.client.Fault, SupervisorUnavailable) as exc:
            return f"unknown ({clean(str(exc))[:200]})"
        return snap if snap is not None else "unknown (malformed answer)"

    def _evidence(self, argv: list[str]) -> str:
        started = time.monotonic()
        code, output, timed_out = run_bounded(argv, started + self.settings.evidence_timeout, keep=EVIDENCE_BYTES)
        text = clean(output)
        if code is None:
            return f"(evidence: cannot run {argv[0]}: {text})"
        if timed_out:
            return f"{text}\n(evidence command killed after {format_duration(self.settings.evidence_timeout)})"
        return text if code == 0 else f"{text}\n(evidence command exit status {code})"

    @staticmethod
    def _result(action: Action, outcome: str, detail: str, found: ProcessSnapshot | None = None) -> ActionResult:
        """found: supervisord's view of the process when the step ended (its state, and its `start` as the
        mark a later start by lookout checks: nobody started it since)."""
        if outcome == FAILED:
            log.error("lookout's %s of %s failed: %s", action.step, action.namespec, detail)
        elif outcome == DIED:
            log.warning("lookout's %s of %s: started, and it died within its startsecs (%s)", action.step,
                        action.namespec, detail)
        else:
            log.warning("lookout's %s of %s called off: %s", action.step, action.namespec, outcome + (
                f" ({detail})" if detail else ""))
        return ActionResult(action.id, action.namespec, action.step, outcome, clean(detail)[:300],
                            mark=float(found.start) if found else 0.0, state=found.state if found else "")
