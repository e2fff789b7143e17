"""An exporter left behind by a supervisord that died hands its port to the next one.

supervisord gives every child its own process group, so kill -9 of supervisord (the OOM killer, a
crash) leaves lookout-exporter running, reparented to init. That is useful for a while: it keeps
answering scrapes with supervisord_up 0, so Prometheus knows why nothing else moves. But the next
supervisord starts its own exporter on the same port; without a handover that one fails to listen
and goes FATAL. So, only when started by supervisord (SUPERVISOR_ENABLED in the environment):

- the orphan watches its parent; once reparented, it asks supervisord's socket every second, and
  exits when a supervisord other than its parent answers;
- a new exporter that finds its port taken waits up to BIND_WAIT for it (logging why) before it
  gives up, so the orphan has the time to go.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from ..rpc import SupervisorClient

log = logging.getLogger("lookout.exporter")
BIND_WAIT = 15.0  # seconds a new exporter waits for its port (the orphan checks every second)
CHECK_EVERY = 1.0


def under_supervisord() -> bool:
    return os.environ.get("SUPERVISOR_ENABLED") == "1"


class Handover:
    """Calls `leave` once the exporter is an orphan and a new supervisord answers."""

    def __init__(self, client: SupervisorClient, leave: Callable[[], None]) -> None:
        self.client, self.leave = client, leave
        self.parent = os.getppid()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="handover", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        told = False
        while not self._stop.wait(CHECK_EVERY):
            if os.getppid() == self.parent:
                continue
            if not told:
                told = True
                log.warning("supervisord (pid %d) is gone: serving supervisord_up 0 until a new supervisord answers, "
                            "then leaving the port to its exporter", self.parent)
            try:
                pid = self.client.call("supervisor.getPID")
            except Exception:  # noqa: BLE001 - not back yet (refused, timeout, malformed answer)
                continue
            if isinstance(pid, int) and not isinstance(pid, bool) and pid != self.parent:
                log.warning("a new supervisord (pid %d) answers: exiting so that its exporter can listen", pid)
                self.leave()
                return
