"""SupervisorWatcher: the listener's XML-RPC calls, off the protocol loop.

Two jobs, both requested by the loop without waiting: reconcile (getAllProcessInfo, at start,
on TICK every reconcile_interval, after lost events or a reload) and exit lookups (events do not
carry the exit status; supervisord's main log does). And a look (getAllProcessInfo too) while the
store cannot be written: which pids run then, for memory only (a Sighting, never a reconcile).
Results go back through a queue, and a byte on the loop's wakeup pipe makes the loop pick them
up. One request that fails, whatever it raises, fails alone: the thread logs it (ErrorLog) and
takes the next.
"""

from __future__ import annotations

import logging
import math
import queue
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass, replace

from ...procfs import spawn_age
from ...rpc import SHUTDOWN_STATE, SupervisorClient, SupervisorUnavailable, snapshot_from_info
from ..rules.models import ProcessSnapshot
from ..rules.process_alerts import LIVE_STATES
from .inbox import Inbox, Posted
from .log_reader import ExitInfo, ProcessLogs
from .thread import ErrorLog, WorkerThread

log = logging.getLogger("lookout.watcher")

RETRY_SECONDS = 5.0
STEADY_SLACK = 2.0  # supervisord's whole seconds against /proc: closer than this, its own `start` is kept
LOOKUP_INTERVAL = 1.0  # at most one readLog / getProcessInfo batch a second: in a storm, many
# small calls would compete with supervisord's own event dispatch


@dataclass(frozen=True)
class Snapshot:
    infos: list[ProcessSnapshot]
    taken_mono: float  # when it was asked for, on the monotonic clock (the loop turns it into its own)
    daemon: dict[str, object]  # version, identification, pid: for the exporter, via meta


@dataclass(frozen=True)
class Sighting:
    """getAllProcessInfo while the listener holds a commit (the store cannot be written): the events
    of a respawn wait in supervisord's buffer meanwhile, so this is the only way the listener learns
    a new pid then. Kept in memory, for a death of supervisord before the store is writable again;
    the engine never gets it (its held events and their successors are the truth once written)."""

    infos: list[ProcessSnapshot]
    taken_mono: float


@dataclass(frozen=True)
class StartsObserved:
    starts: dict[str, tuple[float, int]]  # namespec -> (spawn time on the monotonic clock, pid)


def steady(info: ProcessSnapshot, age: float | None, wall: float) -> ProcessSnapshot:
    """supervisord's `start` is the wall time of the spawn: after a step of the wall clock it no
    longer fits its `now` (an uptime of minus an hour, or an hour too many). A live process's start
    is then what it would read on the wall clock now (`wall`), from its age (/proc's, which no step
    moves), in whole seconds as supervisord gives it. (`stop` only names a run: it stays.)"""
    if info.state in LIVE_STATES and info.pid and info.start and age is not None:
        start = math.floor(wall - age)
        if abs(start - info.start) > STEADY_SLACK:
            return replace(info, start=start)
    return info


@dataclass(frozen=True)
class ExitsObserved:
    exits: dict[tuple[str, int | None], ExitInfo | str]  # (namespec, pid of the run) -> its exit, or why not known


class SupervisorWatcher:
    def __init__(self, client: SupervisorClient, logs: ProcessLogs, inbox: Inbox[Posted],
                 clock: Callable[[], float] = time.monotonic):
        self.client, self.logs, self.clock = client, logs, clock
        self.inbox = inbox  # the loop's, shared with the other workers
        self._requests: queue.Queue[tuple[str, object]] = queue.Queue()
        self.errors = ErrorLog(log)
        self.thread = WorkerThread("lookout-watcher", self._run, self.inbox.wake)

    def start(self) -> None:
        self.thread.start()

    def reconcile(self, why: str) -> None:
        self._requests.put(("reconcile", why))

    def look(self) -> None:
        """Ask for a Sighting (while the store cannot be written)."""
        self._requests.put(("look", None))

    def lookup_exits(self, runs: list[tuple[str, int | None]]) -> None:
        """(namespec, pid) of runs that ended: pid None when the event did not name it (BACKOFF)."""
        self._requests.put(("exits", runs))

    def lookup_starts(self, namespecs: list[str]) -> None:
        self._requests.put(("starts", namespecs))

    def _next_batch(self, timeout: float | None) -> list[tuple[str, object]]:
        """Block for one request (timeout 0: do not block), then take all queued."""
        try:
            batch = [self._requests.get(timeout=timeout) if timeout != 0 else self._requests.get_nowait()]
        except queue.Empty:
            return []
        while True:
            try:
                batch.append(self._requests.get_nowait())
            except queue.Empty:
                return batch

    def _run(self) -> None:
        reconcile_due = ""  # why a reconcile is owed; retried while supervisord cannot answer
        last_lookup = 0.0
        while True:
            wanted: dict[str, set] = {"exits": set(), "starts": set()}
            look = False
            batch = self._next_batch(RETRY_SECONDS if reconcile_due else None)
            wait = last_lookup + LOOKUP_INTERVAL - time.monotonic()
            if wait > 0 and any(kind in wanted for kind, _ in batch):
                time.sleep(wait)  # this worker's own thread: gather what arrives meanwhile
                batch += self._next_batch(0)
            for kind, arg in batch:
                if kind == "reconcile":
                    reconcile_due = str(arg)
                elif kind == "look":
                    look = True
                else:
                    wanted[kind].update(arg)  # type: ignore[arg-type]
            if wanted["exits"] or wanted["starts"]:
                last_lookup = time.monotonic()
            if wanted["exits"]:
                self._isolated("exit lookup", self._lookup, wanted["exits"])
            if wanted["starts"]:
                self._isolated("start lookup", self._lookup_starts, wanted["starts"])
            if look:
                self._isolated("look", self._look, None)
            if reconcile_due and self._isolated("reconcile", self._reconcile, reconcile_due):
                reconcile_due = ""

    def _isolated(self, what: str, job: Callable[[object], object], arg: object) -> object:
        try:
            result = job(arg)
        except Exception:
            self.errors.report(what, "%s failed; the watcher carries on", what)
            return False
        self.errors.clear(what, "%s works again", what)
        return result

    def _post(self, item: Snapshot | ExitsObserved | StartsObserved | Sighting) -> None:
        self.inbox.post(item)

    def _reconcile(self, why: str) -> bool:
        taken = self.clock()
        try:
            infos = self.client.all_process_info()
            version, ident, pid = self.client.multicall([
                ("supervisor.getSupervisorVersion", ()), ("supervisor.getIdentification", ()),
                ("supervisor.getPID", ()),
            ])
        except xmlrpc.client.Fault as exc:
            level = logging.INFO if exc.faultCode == SHUTDOWN_STATE else logging.WARNING
            self.errors.report("reconcile deferred", "reconcile (%s) deferred: supervisord says %s", why,
                               str(exc.faultString)[:200], exc_info=False, level=level)
            return False
        except SupervisorUnavailable as exc:
            self.errors.report("reconcile deferred", "reconcile (%s) deferred: supervisord unreachable: %s", why,
                               exc, exc_info=False, level=logging.WARNING)
            return False
        self.errors.clear("reconcile deferred")
        self.logs.remember(infos)
        if isinstance(pid, int) and not isinstance(pid, bool):
            self.logs.supervisord_pid = pid
        log.info("reconciled with getAllProcessInfo (%s): %d processes", why, len(infos))
        daemon = {
            k: v for k, v in (("version", version), ("identification", ident), ("pid", pid))
            if not isinstance(v, xmlrpc.client.Fault)
        }
        wall = time.time()
        self._post(Snapshot([steady(i, spawn_age(i.pid), wall) for i in infos], taken, daemon))
        return True

    def _look(self, _: object) -> None:
        """One getAllProcessInfo for a Sighting; a supervisord that cannot answer gets the next look."""
        taken = self.clock()
        try:
            infos = self.client.all_process_info()
        except (xmlrpc.client.Fault, SupervisorUnavailable) as exc:
            log.debug("look while the store cannot be written failed: %s", exc)
            return
        self._post(Sighting(infos, taken))

    def _lookup_starts(self, namespecs: set[str]) -> None:
        names = sorted(namespecs)
        try:
            infos = self.client.multicall([("supervisor.getProcessInfo", (ns,)) for ns in names])
        except (xmlrpc.client.Fault, SupervisorUnavailable) as exc:
            log.debug("start lookup failed: %s", exc)
            return
        taken = self.clock()
        starts = {}
        for ns, info in zip(names, infos):
            snap = snapshot_from_info(info)
            if snap is not None and snap.start:
                snap = steady(snap, spawn_age(snap.pid), time.time())
                starts[ns] = (taken - (snap.now - snap.start), snap.pid)  # onto the monotonic clock
        if starts:
            self._post(StartsObserved(starts))

    def _lookup(self, runs: set[tuple[str, int | None]]) -> None:
        try:
            found = self.logs.exits_of_runs(runs)
        except (xmlrpc.client.Fault, SupervisorUnavailable) as exc:
            log.debug("exit lookup failed: %s", exc)
            return
        if found:
            self._post(ExitsObserved(found))
