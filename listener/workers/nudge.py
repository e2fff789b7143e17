"""ExitNudger: wake supervisord the moment a supervised process dies, so its alert is not late.

supervisord 4.x creates the EXITED event while reaping, but hands it to listeners only in its
next main-loop iteration, and with nothing else going on that iteration waits for poll()'s 1 s
timeout (measured by `make bench`: a minimal listener gets ~5-10% of exits about 1 s late).
Any request on supervisord's socket starts an iteration. So the listener watches the pids of
live processes with pidfds (Linux 5.3+, Python 3.9+) and, when one exits, makes one cheap
XML-RPC call (getState) a few milliseconds later; a burst of exits shares one call.
Off thread, best effort, bounded: at most MAX_WATCHED pids, and where pidfds do not exist it
does nothing at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable

from ...rpc import SupervisorClient
from .thread import ErrorLog, WorkerThread

log = logging.getLogger("lookout.nudge")

MAX_WATCHED = 512
SYNC_INTERVAL = 0.05  # apply pid changes at most this often: a storm must not keep this thread busy
DELAY = 0.01  # let supervisord reap first; the call's own round trip spans several iterations


class ExitNudger:
    def __init__(self, client: SupervisorClient, max_watched: int = MAX_WATCHED, enabled: bool = True,
                 on_death: Callable[[], None] = lambda: None) -> None:
        self.client, self.max_watched = client, max_watched
        self.enabled = enabled and hasattr(os, "pidfd_open") and hasattr(select, "poll")
        self._wanted: dict[str, int] = {}  # namespec -> pid, written by the loop
        self._dirty = False  # _wanted changed since the watcher thread last looked
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.thread = WorkerThread("lookout-nudge", self._run, on_death)
        self.errors = ErrorLog(log)

    def start(self) -> None:
        if self.enabled:
            self.thread.start()

    def track(self, namespec: str, pid: int | None) -> None:
        """The live pid of a process, or None once it is not running."""
        if not self.enabled or self._wanted.get(namespec) == (pid or None):
            return  # the common case on the protocol loop: nothing changed, no syscall
        with self._lock:
            if pid:
                self._wanted[namespec] = pid
            else:
                self._wanted.pop(namespec, None)
            if self._dirty:
                return  # the watcher thread has not synced yet: one wake-up covers both
            self._dirty = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        watched: dict[int, int] = {}  # pidfd -> pid
        gone: set[int] = set()  # pids that were already dead when we tried: never retried
        nudge_at: float | None = None
        sync_at: float | None = None
        last_sync = 0.0
        while True:
            due = [t for t in (nudge_at, sync_at) if t is not None]
            timeout = None if not due else max(0, int((min(due) - time.monotonic()) * 1000))
            try:
                events = poller.poll(timeout)
            except Exception:  # one bad round: drop the watches, start over from what is wanted
                self.errors.report("poll", "nudger: poll failed; re-syncing its watches")
                watched.clear()
                poller = select.poll()
                poller.register(self._wake_r, select.POLLIN)
                sync_at = time.monotonic() + 1.0
                continue
            for fd, _ in events:
                if fd == self._wake_r:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 4096)
                    sync_at = sync_at or max(time.monotonic(), last_sync + SYNC_INTERVAL)
                elif fd in watched:  # that process has exited
                    poller.unregister(fd)
                    os.close(fd)
                    del watched[fd]
                    nudge_at = nudge_at or time.monotonic() + DELAY
            if sync_at is not None and time.monotonic() >= sync_at:
                sync_at, last_sync = None, time.monotonic()
                try:
                    self._sync(poller, watched, gone)
                except Exception:
                    self.errors.report("sync", "nudger: syncing watched pids failed; retrying")
                    sync_at = time.monotonic() + 1.0
            if nudge_at is not None and time.monotonic() >= nudge_at:
                nudge_at = None
                try:
                    self.client.call("supervisor.getState")
                except Exception as exc:  # best effort: the event still arrives, just later
                    log.debug("nudge failed: %s", exc)

    def _sync(self, poller: select.poll, watched: dict[int, int], gone: set[int]) -> None:
        with self._lock:
            wanted = set(self._wanted.values())
            self._dirty = False
        gone &= wanted
        for fd, pid in list(watched.items()):
            if pid not in wanted:
                poller.unregister(fd)
                os.close(fd)
                del watched[fd]
        have = set(watched.values())
        for pid in wanted - have - gone:
            if len(watched) >= self.max_watched:
                break
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                gone.add(pid)  # already gone (its EXITED event is on the way), or not ours to watch
                continue
            watched[fd] = pid
            poller.register(fd, select.POLLIN)
