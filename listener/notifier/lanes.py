"""Lanes: each notification target sends on a thread of its own, one message at a time, under
one deadline for the whole request (deadline.py), so a target that hangs or trickles its answer
slows only itself.

The notifier thread hands an idle lane a Job and takes every lane's Results from one queue (a
lane sets the notifier's wake event when it puts one there): it never calls a target's send, so
grouping, rendering and queueing never wait on one. A send still out at its deadline is cut (its
connections shut down) and judged by what the target's host acknowledged:

  SENT       the target accepted it
  FAILED     it said no, or could not be reached, within the deadline
  TIMED_OUT  no answer by the deadline, and the target's host did not take the whole request
  MAYBE      no answer by the deadline after its host took the whole request: it may have it
             ("maybe delivered"; sender.py sends it again, at most 3 copies in all)

A send the watchdog cannot cut (blocked in a DNS lookup or in a plugin's own sleep) is reported
GRACE after its deadline all the same; its lane then takes nothing new until that thread
returns, so a target that hangs for good holds one thread, never more.

Without start() (tests that drive the notifier's step() by hand), a lane sends in the caller's
thread at once: the same decisions, one message at a time, without the watchdog.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from ...config import format_duration
from ..workers.inbox import drain_queue
from ..workers.thread import WorkerThread
from .deadline import SendWatch, install, watched
from .target import DeliveryError

log = logging.getLogger("lookout.notifier")
GRACE = 2.0  # seconds after its deadline that a cut send has to return before it is reported for


class Verdict(Enum):
    SENT = "sent"
    FAILED = "failed"
    TIMED_OUT = "timed out"
    MAYBE = "maybe delivered"


@dataclass(frozen=True)
class Job:
    target_key: str
    title: str
    body: str
    notify_type: str
    ref: Any  # what the notifier sends: an outbox message, or a system message from memory


@dataclass(frozen=True)
class Result:
    job: Job
    verdict: Verdict
    error: str = ""
    took: float = 0.0  # seconds from the hand-over to the verdict

    @property
    def answered(self) -> bool:
        """The target answered within the deadline (yes or no): it does not hang."""
        return self.verdict in (Verdict.SENT, Verdict.FAILED)


def request_floor(target: Any, body: str) -> int:
    """Bytes that a whole request to this target carries at least (its message, as the plugin
    cuts it): what its host must have acknowledged for the request to count as taken."""
    floor = getattr(target, "request_floor", None)
    return floor(body) if floor is not None else len(body.encode("utf-8", "replace"))


class Lane:
    """One target's sends, one at a time."""

    def __init__(self, target: Any, timeout: float, results: queue.SimpleQueue, wake: threading.Event) -> None:
        self.target, self.timeout = target, timeout
        self._results, self._wake = results, wake
        self._inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._busy = False  # its thread runs a send (also one already reported for it)
        self._job: Job | None = None  # handed over and not yet reported
        self._watch: SendWatch | None = None
        self._handed_at = 0.0  # time.monotonic()
        self.thread: WorkerThread | None = None

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._busy

    @property
    def waiting(self) -> bool:
        """A job was handed over and its result is not in yet."""
        with self._lock:
            return self._job is not None

    def start(self) -> None:
        self.thread = WorkerThread(f"lookout-lane {self.target.label}", self._run)
        self.thread.start()

    def stop(self) -> None:
        self._inbox.put(None)

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._busy:
                raise RuntimeError(f"the lane of {self.target.label} is busy")
            self._busy, self._job = True, job
            self._handed_at = time.monotonic()
            self._watch = SendWatch(self._handed_at + self.timeout)
        if self.thread is None:
            self._send(job)
        else:
            self._inbox.put(job)

    def _run(self) -> None:
        while (job := self._inbox.get()) is not None:
            self._send(job)

    def _send(self, job: Job) -> None:
        with self._lock:
            watch = self._watch
        assert watch is not None
        ok, error = False, ""
        try:
            with watched(watch):
                self.target.send(job.title, job.body, job.notify_type)
            ok = True
        except Exception as exc:  # DeliveryError, a cut connection, or a bug in one target: this send alone
            error = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__} while sending"
        with self._lock:
            took = time.monotonic() - self._handed_at
        result = self._verdict(job, ok, error, watch, took)
        with self._lock:  # the answer is in the queue before the lane looks idle
            mine = self._job is job
            if mine:
                self._results.put(result)
            self._busy, self._job, self._watch = False, None, None
        if mine:
            self._wake.set()
        else:
            log.warning("a send to %s returned after %.0fs, after it was reported as not answered in time",
                        self.target.label, took)

    def check(self, now: float) -> float | None:
        """The watchdog's look: cut a send at its deadline; report one that is still blocked GRACE
        later. Returns when to look again."""
        with self._lock:
            job, watch = self._job, self._watch
        if job is None or watch is None:
            return None
        if now < watch.deadline:
            return watch.deadline
        watch.expire()
        if now < watch.deadline + GRACE:
            return watch.deadline + GRACE
        with self._lock:
            if self._job is not job:
                return None
            self._job = None
            took = now - self._handed_at
        result = self._verdict(job, False, "", watch, took)
        log.warning("a send to %s is still blocked %.0fs after its deadline (a DNS lookup, or the plugin itself): "
                    "the target takes no other message until it returns", self.target.label, GRACE)
        self._report(replace(result, error=result.error + "; the send is still blocked (a DNS lookup, or the plugin)"))
        return None

    def _verdict(self, job: Job, ok: bool, error: str, watch: SendWatch, took: float) -> Result:
        if ok:
            return Result(job, Verdict.SENT, "", took)
        if not (watch.expired or took >= self.timeout):
            return Result(job, Verdict.FAILED, error, took)
        limit = format_duration(self.timeout)
        if any(seen.took(request_floor(self.target, job.body)) for seen in watch.seen):
            return Result(job, Verdict.MAYBE, f"no answer within {limit} to a request its host took in full", took)
        return Result(job, Verdict.TIMED_OUT, f"no answer within {limit}", took)

    def _report(self, result: Result) -> None:
        self._results.put(result)
        self._wake.set()


class Lanes:
    """A lane per target, the results queue they share, and the watchdog of their deadlines."""

    def __init__(self, targets: list, timeout: float, wake: threading.Event) -> None:
        self._results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self._lanes = {t.key: Lane(t, float(getattr(t, "timeout", timeout)), self._results, wake) for t in targets}
        self._poke = threading.Event()
        self._stopping = threading.Event()
        self.watchdog: WorkerThread | None = None

    def start(self) -> None:
        install()
        for lane in self._lanes.values():
            lane.start()
        self.watchdog = WorkerThread("lookout-lanes-watchdog", self._watch)
        self.watchdog.start()

    def stop(self) -> None:
        """Threads still in a send are left to it (daemons): the process may exit under them."""
        self._stopping.set()
        self._poke.set()
        for lane in self._lanes.values():
            lane.stop()

    def idle(self, key: str) -> bool:
        lane = self._lanes.get(key)
        return lane is not None and lane.idle

    def submit(self, job: Job) -> None:
        self._lanes[job.target_key].submit(job)
        self._poke.set()

    def results(self) -> list[Result]:
        return drain_queue(self._results)

    def waiting(self) -> bool:
        return any(lane.waiting for lane in self._lanes.values())

    def died(self) -> str:
        threads = [lane.thread for lane in self._lanes.values()] + [self.watchdog]
        return next((f"{t.name}: {t.died}" for t in threads if t is not None and t.died), "")

    def _watch(self) -> None:
        while not self._stopping.is_set():
            self._poke.clear()
            now = time.monotonic()
            due = [t for lane in self._lanes.values() if (t := lane.check(now)) is not None]
            self._poke.wait(max(0.0, min(due) - time.monotonic()) if due else None)
