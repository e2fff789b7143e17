"""supervisord calls for the bench on a busy machine, and a note of how busy it was.

The bench drives a supervisord with 100 to 1000 programs while other work may share the machine:
an XML-RPC call that waits on a group's stop (stopProcessGroup with wait) can then take longer
than the 10 s the tests allow, and one such call used to end the whole run ("supervisord did not
answer within 10s"). Here every call gets a minute and is tried again after a pause, up to TRIES
times (the calls the bench makes are safe to repeat: a group already stopped or started answers
per process, not with a fault); waits get five times their usual length. Each slow or repeated
call and each slow wait is counted, and the tables end with a note saying the machine was too
busy, from these counts and the load average: such a run's numbers do not judge the targets (the
load weighs more on the side of a ratio that does more work).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lookout.config import SupervisorSettings
from lookout.rpc import SupervisorClient, SupervisorUnavailable
from tests.harness import wait_for

TIMEOUT = 60.0  # seconds for one call
TRIES = 4
SLOW = 10.0  # a call slower than the tests' timeout: the machine is busy
WAIT_SLACK = 5  # a wait may take this many times its usual length before the bench gives up


@dataclass
class Patience:
    calls: int = 0
    retried: int = 0
    slow: int = 0
    slowest: float = 0.0
    loads: list[float] = field(default_factory=list)  # 1-minute load averages, sampled per call
    slow_waits: list[str] = field(default_factory=list)  # waits that took longer than usual: what, how long

    def call(self, sup: Any, method: str, *args: Any) -> Any:
        """supervisord's answer to one call, tried up to TRIES times with a TIMEOUT each."""
        client = SupervisorClient(SupervisorSettings(serverurl=f"unix://{sup.sock}", timeout=TIMEOUT))
        self.loads.append(os.getloadavg()[0])
        for attempt in range(1, TRIES + 1):
            self.calls += 1
            started = time.monotonic()
            try:
                return client.call(method, *args)
            except SupervisorUnavailable as exc:
                if attempt == TRIES:
                    raise SupervisorUnavailable(f"{method}: {exc}, {TRIES} times: the machine is too busy for this "
                                                f"bench (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
                                                "cores); run it when the machine is quieter") from None
                self.retried += 1
                time.sleep(2.0 * attempt)  # give the machine a moment before asking again
            finally:
                took = time.monotonic() - started
                self.slowest = max(self.slowest, took)
                self.slow += took > SLOW
        raise AssertionError("unreachable")

    def wait(self, cond: Callable[[], Any], usual: float, what: str, interval: float = 0.1) -> Any:
        """wait_for with WAIT_SLACK times the usual deadline; a wait past `usual` is noted."""
        started = time.monotonic()
        self.loads.append(os.getloadavg()[0])
        value = wait_for(cond, usual * WAIT_SLACK, what, interval)
        took = time.monotonic() - started
        if took > usual:
            self.slow_waits.append(f"{what} ({took:.0f}s, usually under {usual:g}s)")
        return value

    def note(self) -> str:
        """One paragraph for the end of the tables: empty when the machine was quiet enough."""
        cores = os.cpu_count() or 1
        peak = max(self.loads, default=0.0)
        if not (self.retried or self.slow or self.slow_waits or peak > cores):
            return ""
        waits = f"; slow waits: {', '.join(self.slow_waits[:5])}" if self.slow_waits else ""
        return (f"NOTE: the machine was too busy for absolute numbers: {self.slow} of {self.calls} supervisord calls "
                f"took over {SLOW:g}s (slowest {self.slowest:.1f}s), {self.retried} were tried again, load average up "
                f"to {peak:.1f} on {cores} cores{waits}. Both sides of each ratio ran under that load, but it weighs "
                "more on the side that does more work: a MISSED target in this run may be the machine's doing; run "
                "`make bench` on a quieter machine to judge the targets.")


PATIENCE = Patience()  # one per `make bench` run: every module's calls count towards its note
