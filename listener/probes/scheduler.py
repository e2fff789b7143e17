"""ProbeScheduler: each probe every `period` on each RUNNING process it matches, off the loop.

The loop tells it which processes run (set_process) and reads results from `results`, woken by
a byte on its wakeup pipe, like the watcher's. A run that is due while the previous one is
still in flight is skipped: never two at once for one probe and one process. Probes run on a
bounded pool of threads; one that hangs holds one thread until its timeout.

Runs are spread over the period, as Prometheus spreads its scrapes: each (process, probe) gets
a fixed offset in its period and runs at offset + k x period, so a pool of 100 workers started
together does not hit its endpoints (or a shared dependency) in the same millisecond. Random
offsets would leave gaps of 5x the mean between runs; the golden-ratio sequence over a stable
index (in order of first appearance, one sequence per period) keeps every gap within 2x the
mean (three-gap theorem). The first run after a start is the first such moment at least
initial_delay after it. All of it is on the monotonic clock: a step of the wall clock moves no run.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...config import ProbeSpec
from ..workers.inbox import Inbox, Posted
from ..workers.thread import ErrorLog, WorkerPool, WorkerThread
from .checks import Check
from .target import ProbeTarget

log = logging.getLogger("lookout.probes")

MAX_WORKERS = 64
LATENESS_SAMPLES = 20_000
GOLDEN = (math.sqrt(5) - 1) / 2  # the fractions k x GOLDEN mod 1 fill [0, 1) most evenly


@dataclass
class _Instance:
    spec: ProbeSpec
    target: ProbeTarget
    next_at: float
    in_flight: bool = False
    memory: dict[str, Any] = field(default_factory=dict)  # what a stateful check keeps between runs


class ProbeScheduler:
    def __init__(self, check: Check, inbox: Inbox[Posted], *, max_workers: int = MAX_WORKERS,
                 clock: Callable[[], float] = time.monotonic, on_death: Callable[[], None] = lambda: None) -> None:
        self.check, self.clock = check, clock
        self.inbox = inbox  # the loop's, shared with the other workers
        self.lateness: deque[float] = deque(maxlen=LATENESS_SAMPLES)  # seconds a run started after it was due
        self.runs = 0
        self.skipped = 0  # runs not started because the previous one was still in flight, or far behind
        self._instances: dict[str, dict[str, _Instance]] = {}  # namespec -> probe name -> instance
        self._heap: list[tuple[float, int, tuple[str, str]]] = []
        self._seq = itertools.count()
        self._slots: dict[tuple[str, str], int] = {}  # (namespec, probe) -> its index in its period's sequence
        self._slots_used: dict[float, int] = {}  # period -> indexes handed out
        self._cond = threading.Condition()
        self.pool = WorkerPool("lookout-probe", max_workers, on_death)
        self.errors = ErrorLog(log)
        self.thread = WorkerThread("lookout-probes", self._run, on_death)

    def start(self) -> None:
        self.thread.start()

    # ---- called from the loop ------------------------------------------------------------

    def set_process(self, namespec: str, target: ProbeTarget | None, specs: tuple[ProbeSpec, ...]) -> None:
        """The probes that should run on a process now: none unless it is RUNNING (target).
        Called for every change of every record: the common case (nothing changed) is cheap."""
        current = self._instances.get(namespec)
        if current is None and target is None:
            return
        if current is not None and target is not None and len(current) == len(specs) and all(
                inst.target == target and inst.spec is spec for inst, spec in zip(current.values(), specs)):
            return
        with self._cond:
            if target is None:
                self._instances.pop(namespec, None)
                return  # stale heap entries are skipped when they come up
            fresh: dict[str, _Instance] = {}
            old = self._instances.get(namespec, {})
            for spec in specs:
                inst = old.get(spec.name)
                if inst is None or inst.target != target or inst.spec is not spec:
                    first = self._first_run(namespec, spec, target)
                    inst = _Instance(spec, target, first)
                    heapq.heappush(self._heap, (first, next(self._seq), (namespec, spec.name)))
                fresh[spec.name] = inst
            self._instances[namespec] = fresh
            self._cond.notify()

    def offset(self, namespec: str, spec: ProbeSpec) -> float:
        """Where in its period this process's probe runs: fixed for the listener's life."""
        key = (namespec, spec.name)
        index = self._slots.get(key)
        if index is None:
            index = self._slots[key] = self._slots_used.get(spec.period, 0)
            self._slots_used[spec.period] = index + 1
        return (index * GOLDEN) % 1.0 * spec.period

    def _first_run(self, namespec: str, spec: ProbeSpec, target: ProbeTarget) -> float:
        """The first moment on this probe's grid (offset + k x period) after initial_delay, not in the past."""
        earliest = max(self.clock(), target.started_mono + spec.initial_delay)
        offset = self.offset(namespec, spec)
        first = offset + math.ceil((earliest - offset) / spec.period) * spec.period
        return first if first >= earliest else first + spec.period  # rounding must not make it early

    def active(self) -> int:
        with self._cond:
            return sum(len(v) for v in self._instances.values())

    def stats(self) -> dict[str, float]:
        """Runs, skipped runs, and how late recent runs started (p50, p95), for the store's meta."""
        recent = sorted(list(self.lateness)[-2000:])
        pick = (lambda q: recent[min(len(recent) - 1, int(q * len(recent)))]) if recent else (lambda q: 0.0)
        return {"probe_runs": self.runs, "probe_skipped": self.skipped,
                "probe_lateness_p50": round(pick(0.5), 6), "probe_lateness_p95": round(pick(0.95), 6)}

    # ---- the scheduling thread ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._next_due()
                if due is None:
                    continue
            key, inst, due_at = due
            try:
                self.pool.submit(self._run_probe, key, inst, due_at)
            except RuntimeError:  # pool shut down: the process is exiting
                return
            except Exception:
                self.errors.report("submit", "probe scheduling failed; carrying on")
                with self._cond:
                    inst.in_flight = False

    def _next_due(self) -> tuple[tuple[str, str], _Instance, float] | None:
        """Wait until the earliest run is due; None when woken early. Holds the lock."""
        while self._heap:
            at, _, key = self._heap[0]
            inst = self._instances.get(key[0], {}).get(key[1])
            if inst is None or inst.next_at != at:
                heapq.heappop(self._heap)  # removed, or rescheduled: a stale entry
                continue
            now = self.clock()
            if at > now:
                self._cond.wait(at - now)
                return None
            heapq.heappop(self._heap)
            upcoming = at + inst.spec.period
            while upcoming <= now:  # far behind (suspended, overloaded): no backlog of runs
                upcoming += inst.spec.period
                self.skipped += 1
            inst.next_at = upcoming
            heapq.heappush(self._heap, (upcoming, next(self._seq), key))
            if inst.in_flight:
                self.skipped += 1
                continue  # the previous run is not back: never two at once
            inst.in_flight = True
            return key, inst, at
        self._cond.wait()
        return None

    def _run_probe(self, key: tuple[str, str], inst: _Instance, due_at: float) -> None:
        self.lateness.append(max(0.0, self.clock() - due_at))
        try:
            result = self.check.run(inst.spec, inst.target, inst.memory)
        except Exception:  # Check.run never raises; if it does, this run alone is lost
            self.errors.report("run", "probe %s crashed", inst.spec.name)
            result = None
        with self._cond:
            inst.in_flight = False
            self.runs += 1
        if result is not None:
            self.inbox.post(result)
