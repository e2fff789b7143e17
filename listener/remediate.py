"""RemediationExecutor: lookout's own stops and starts, on worker threads, never on the loop.

superlance's memmon and httpok stop and start in the event loop (a slow stop overflows the
event buffer, superlance PR #41) and do not check the result (a failed start leaves the
program silently STOPPED, superlance#43). Here each action runs off the loop: the evidence
command first (with a timeout, its output kept for the alert), then stopProcess and
startProcess over XML-RPC with wait=True, then getProcessInfo to check that it is RUNNING.
The result goes back to the rules, which alert on a failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import time
import xmlrpc.client
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .config import RemediationSettings, format_duration
from .probes.checks import run_bounded
from .probes.target import ProbeTarget
from .rpc import ALREADY_STARTED, NOT_RUNNING, SupervisorClient, SupervisorUnavailable, snapshot_from_info
from .rules.models import Action, ActionResult
from .text import clean

log = logging.getLogger("lookout.remediate")

WAIT_TIMEOUT = 300.0  # stopwaitsecs and startsecs can be long; the call must outlast them
EVIDENCE_BYTES = 16384


class RemediationExecutor:
    def __init__(self, client: SupervisorClient, settings: RemediationSettings, wakeup_fd: int,
                 workers: int = 4) -> None:
        self.client = client.patient(WAIT_TIMEOUT)
        self.settings, self.wakeup_fd = settings, wakeup_fd
        self.results: queue.Queue[tuple[ActionResult, str]] = queue.Queue()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="lookout-remediate")

    def submit(self, action: Action, target: ProbeTarget | None, fill: Callable[[str], str] | None) -> None:
        log.warning("lookout %s %s: %s", {"restart": "restarts", "stop": "stops", "start": "starts"}[action.kind],
                    action.namespec, action.reason)
        self._pool.submit(self._run, action, target, fill)

    def drain(self) -> list[tuple[ActionResult, str]]:
        items = []
        while True:
            try:
                items.append(self.results.get_nowait())
            except queue.Empty:
                return items

    def _run(self, action: Action, target: ProbeTarget | None, fill: Callable[[str], str] | None) -> None:
        try:
            result = self._do(action, fill)
        except Exception as exc:  # one action fails alone; the rules hear of it
            log.exception("lookout's %s of %s failed", action.kind, action.namespec)
            result = ActionResult(action.id, action.namespec, action.kind, False, f"{type(exc).__name__}: {exc}")
        self.results.put((result, action.source))
        with contextlib.suppress(OSError):
            os.write(self.wakeup_fd, b"r")

    def _do(self, action: Action, fill: Callable[[str], str] | None) -> ActionResult:
        ns, evidence, stopped, started = action.namespec, "", False, False
        if action.evidence and fill is not None:
            evidence = self._evidence([fill(a) for a in action.evidence])
        if action.kind in ("restart", "stop"):
            try:
                self.client.call("supervisor.stopProcess", ns, True)
                stopped = True
            except xmlrpc.client.Fault as exc:
                if exc.faultCode != NOT_RUNNING:
                    return self._failed(action, f"stop failed: {exc.faultString}", evidence)
            except SupervisorUnavailable as exc:
                return self._failed(action, f"stop failed: {exc}", evidence)
        if action.kind in ("restart", "start"):
            try:
                self.client.call("supervisor.startProcess", ns, True)
                started = True
            except xmlrpc.client.Fault as exc:
                if exc.faultCode != ALREADY_STARTED:
                    return self._failed(action, f"start failed: {exc.faultString}", evidence, stopped)
            except SupervisorUnavailable as exc:
                return self._failed(action, f"start failed: {exc}", evidence, stopped)
            state = self._state(ns)
            if state != "RUNNING":
                return self._failed(action, f"started, but it is {state}", evidence, stopped, started)
        return ActionResult(action.id, ns, action.kind, True, "", stopped, started, evidence)

    def _state(self, namespec: str) -> str:
        try:
            snap = snapshot_from_info(self.client.call("supervisor.getProcessInfo", namespec))
        except (xmlrpc.client.Fault, SupervisorUnavailable) as exc:
            return f"unknown ({exc})"
        return snap.state if snap is not None else "unknown (malformed answer)"

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
    def _failed(action: Action, detail: str, evidence: str, stopped: bool = False,
                started: bool = False) -> ActionResult:
        log.error("lookout's %s of %s failed: %s", action.kind, action.namespec, detail)
        return ActionResult(action.id, action.namespec, action.kind, False, clean(detail)[:300], stopped, started,
                            evidence)
