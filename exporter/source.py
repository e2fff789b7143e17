"""Where a scrape's numbers come from: the listener's store, or supervisord itself.

A scrape costs supervisord nothing while the listener is healthy: its store is kept current by
events. The store is trusted when the listener and supervisord processes are alive (pids in the
store's meta, checked with kill(pid, 0)) and the heartbeat is fresher than heartbeat_stale.
Otherwise the exporter polls supervisord (timeout, fresh connection, no stdlib MultiCall), one
poll at a time however many scrapes arrive together, and keeps serving counters from the store.

When supervisord does not answer either (an exporter left running by a supervisord killed -9),
the store's last word is all there is, and it publishes only what it can check: a program whose
process still runs (pid and start time in /proc) is RUNNING with its own uptime, still running
as an orphan; one whose process is gone, and the listener (it exits once supervisord's pipe
closes), are UNKNOWN (up 0, uptime 0, since 0); stopped, exited and FATAL ones stay as they were
(nothing starts them now); and lookout_exporter_source says "store".
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import xmlrpc.client
from dataclasses import dataclass, field, replace

from ..config import Config
from ..listener.store.files import StoreUnavailable, identity
from ..listener.store.reads import StoreReader
from ..procfs import same_process
from ..redact import scheme_of
from ..rpc import SHUTDOWN_STATE, SupervisorClient, SupervisorUnavailable

SUPERVISORD_STATES = ("FATAL", "RUNNING", "RESTARTING", "SHUTDOWN")
MAY_RUN = ("STARTING", "RUNNING", "BACKOFF", "STOPPING")  # a process may still run: /proc says whether


@dataclass
class ProcessView:
    group: str
    name: str
    state: str
    pid: int
    start_time: float  # unix time of the last start, 0 if never started
    uptime: float
    exit_status: int | None
    state_since: float = 0.0  # unix time it entered this state (0: unknown)
    restarts: int | None = None  # None: unknown (no store)
    unexpected_exits: int | None = None
    crash_looping: bool = False
    braked: bool = False
    remediation_exhausted: bool = False
    stopped_by: str = ""  # from the store: "operator" when an operator stopped it


@dataclass(frozen=True)
class ProbeView:
    group: str
    name: str
    probe: str
    healthy: bool | None  # None: not judged since the process started
    last_ok: bool | None
    last_duration: float
    failures_total: int
    judged: bool = True  # False: its last run could not read its evidence (schema 5)


@dataclass
class ScrapeData:
    source: str  # "store" or "supervisord"
    up: bool
    state: str  # one of SUPERVISORD_STATES
    version: str = ""
    identification: str = ""
    processes: list[ProcessView] = field(default_factory=list)
    last_event_at: float | None = None
    outbox_pending: int | None = None
    notifications: dict[tuple[str, str], int] = field(default_factory=dict)
    targets_failing: dict[str, bool] = field(default_factory=dict)  # 'scheme://host' -> failing or hanging
    probes: list[ProbeView] = field(default_factory=list)
    probe_stats: dict[str, float] = field(default_factory=dict)  # the listener's scheduler: runs, skipped, lateness
    remediations: dict[tuple[str, str, str, str], int] = field(default_factory=dict)  # (group, name, action, result)
    orphans: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, name) -> orphans alive (store)
    checks: dict[str, bool | None] = field(default_factory=dict)  # [[checks]]: "check:vpn" -> up (None: not yet)
    waits: dict[str, tuple[str, float | None]] = field(default_factory=dict)  # dependencies: who waits, since
    exits_expected: dict[str, bool] = field(default_factory=dict)  # the last exit expected, by exitcodes (store)
    listener_pid: int = 0  # the listener's pid in the store: it is gone once supervisord is
    why: str = ""  # why the store was not used, for the landing page and logs


def _alive(pid: object) -> bool:
    try:
        pid = int(pid)  # type: ignore[arg-type]
        if pid <= 0:
            return False
        os.kill(pid, 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def as_seen(p: ProcessView, listener_pid: int, now: float) -> ProcessView:
    """A process as the store last knew it, when supervisord cannot be asked: running only while its
    process does (pid and start time), else UNKNOWN; the listener counts as gone."""
    if p.state not in MAY_RUN:
        return p
    if p.pid and p.pid != listener_pid and p.start_time and same_process(p.pid, p.start_time):
        return replace(p, state="RUNNING", uptime=max(0.0, now - p.start_time))
    return replace(p, state="UNKNOWN", uptime=0.0, state_since=0.0)


class Source:
    def __init__(self, config: Config, clock=time.time) -> None:  # noqa: ANN001
        self.config, self.clock = config, clock
        self.client = SupervisorClient(config.supervisor)
        self._local = threading.local()
        self._poll_lock = threading.Lock()
        self._poll_result: tuple[float, ScrapeData] | None = None

    def _db(self) -> StoreReader | None:
        """This thread's read-only view of the store, reopened when the file was deleted or replaced
        (the listener recreates a deleted store: its counters are in the new file)."""
        now_id = identity(self.config.state_path)
        store = getattr(self._local, "store", None)
        if store is not None and getattr(self._local, "identity", None) != now_id:
            store.close()
            store = self._local.store = None
        if store is None:
            if now_id is None:
                return None
            try:
                store = StoreReader.open(self.config.state_path)
            except (sqlite3.Error, StoreUnavailable):
                return None
            self._local.store, self._local.identity = store, now_id
        return store

    def read(self) -> ScrapeData:
        now = self.clock()
        reader = self._db()
        store = self._read_store(reader, now) if reader is not None else None
        if store is not None and not store.why:
            return store
        polled = self._poll(now)
        polled.why = store.why if store is not None else "no listener store at state.path"
        if store is not None:  # counters and listener health only ever come from the store
            polled.last_event_at, polled.outbox_pending = store.last_event_at, store.outbox_pending
            polled.targets_failing = store.targets_failing
            polled.notifications, polled.probes, polled.remediations = (store.notifications, store.probes,
                                                                        store.remediations)
            polled.probe_stats = store.probe_stats
            polled.orphans, polled.checks, polled.waits = store.orphans, store.checks, store.waits
            polled.exits_expected = store.exits_expected
            counters = {(p.group, p.name): p for p in store.processes}
            for p in polled.processes:
                known = counters.get((p.group, p.name))
                if known is not None:
                    p.restarts, p.unexpected_exits = known.restarts, known.unexpected_exits
                    p.crash_looping, p.braked = known.crash_looping, known.braked
                    p.remediation_exhausted, p.stopped_by = known.remediation_exhausted, known.stopped_by
                    if p.state in ("EXITED", "BACKOFF", "FATAL", "STOPPED") and known.exit_status is not None:
                        p.exit_status = known.exit_status  # the real one, from supervisord's log
            if not polled.up and not polled.processes:  # the store's last word, checked in /proc
                polled.processes = [as_seen(p, store.listener_pid, now) for p in store.processes]
                polled.source = "store"
        return polled

    # ---- the store ------------------------------------------------------------------------

    def _read_store(self, store: StoreReader, now: float) -> ScrapeData | None:
        try:
            meta = store.meta()
            last_event = store.heartbeat()
            rows = store.present_processes()
            pending = store.outbox_pending()
            stats = store.notification_counts()
            probes = store.probes(by_name=True)
            remediations = store.remediation_counts()
            orphans = store.orphans()
            waits = store.dependency_waits() if self.config.dependencies else {}
            expected = store.exits_expected() if self.config.dependencies else {}
        except sqlite3.Error:
            return None
        targets = store.targets_failing()  # a target hangs, or its messages are being retried
        data = ScrapeData(
            source="store",
            up=True,
            state="RESTARTING" if meta.get("stopping") == "1" else "RUNNING",
            version=meta.get("supervisord_version") or "",
            identification=meta.get("supervisord_identification") or "",
            last_event_at=last_event,
            outbox_pending=pending,
            notifications={
                **{(scheme_of(u), r): 0 for u in self.config.notify.urls for r in ("success", "failure")},
                **stats,
            },
            targets_failing=targets,
            waits=waits,
            exits_expected=expected,
        )
        for r in rows:
            running = r.state == "RUNNING"
            data.processes.append(ProcessView(
                group=r.group, name=r.name, state=r.state, pid=r.pid, start_time=r.last_start,
                uptime=max(0.0, now - r.last_start) if running and r.last_start else 0.0,
                exit_status=r.last_exit_status, state_since=r.state_since, restarts=r.restarts,
                unexpected_exits=r.unexpected_exits, crash_looping=r.crash_looping,
                braked=r.braked, remediation_exhausted=r.remediation_exhausted, stopped_by=r.stopped_by,
            ))
        present = {(p.group, p.name) for p in data.processes}
        for pr in probes:
            group, _, name = pr.namespec.partition(":")
            if pr.namespec.startswith("check:"):
                data.checks[pr.namespec] = pr.healthy
            if (group, name) in present:
                data.probes.append(ProbeView(group, name, pr.probe, pr.healthy, pr.last_ok, pr.last_duration,
                                             pr.failures_total, pr.judged))
        for key in ("probe_runs", "probe_skipped", "probe_lateness_p50", "probe_lateness_p95", "deadman_ok",
                    "deadman_fail_sent", "deadman_error"):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                data.probe_stats[key] = float(meta[key])
        for rc in remediations:
            group, _, name = rc.namespec.partition(":")
            data.remediations[(group, name, rc.action, rc.result)] = rc.count
        for orphan in orphans:
            if same_process(orphan.pid, orphan.started):
                group, _, name = orphan.namespec.partition(":")
                data.orphans[(group, name)] = data.orphans.get((group, name), 0) + 1
        with contextlib.suppress(TypeError, ValueError):
            data.listener_pid = int(meta.get("listener_pid") or 0)
        if not _alive(meta.get("listener_pid")):
            data.why = "the listener is not running"
        elif not _alive(meta.get("supervisord_pid")):
            data.why = "supervisord is not running"
        elif not meta.get("last_reconcile_at"):
            data.why = "the listener has not reconciled yet"
        elif last_event is None or now - last_event > self.config.exporter.heartbeat_stale:
            data.why = "the listener's heartbeat is stale"
        return data

    # ---- supervisord ----------------------------------------------------------------------

    def _poll(self, now: float) -> ScrapeData:
        """One poll at a time; scrapes that arrive during it share its result."""
        started = time.monotonic()  # (not the wall clock: stepped back, it would serve one old poll for the step)
        with self._poll_lock:
            if self._poll_result is not None and self._poll_result[0] >= started:
                return self._copy(self._poll_result[1])
            data = self._poll_supervisord(now)
            self._poll_result = (time.monotonic(), data)
            return self._copy(data)

    @staticmethod
    def _copy(data: ScrapeData) -> ScrapeData:
        return ScrapeData(**{**data.__dict__, "processes": [ProcessView(**p.__dict__) for p in data.processes]})

    def _poll_supervisord(self, now: float) -> ScrapeData:
        try:
            state, infos, version, ident = self.client.multicall([
                ("supervisor.getState", ()), ("supervisor.getAllProcessInfo", ()),
                ("supervisor.getSupervisorVersion", ()), ("supervisor.getIdentification", ()),
            ])
        except SupervisorUnavailable:
            return ScrapeData(source="supervisord", up=False, state="SHUTDOWN")
        except xmlrpc.client.Fault as exc:
            if exc.faultCode == SHUTDOWN_STATE:
                return ScrapeData(source="supervisord", up=True, state="RESTARTING")
            return ScrapeData(source="supervisord", up=False, state="SHUTDOWN")
        if isinstance(state, xmlrpc.client.Fault):
            restarting = state.faultCode == SHUTDOWN_STATE
            return ScrapeData(source="supervisord", up=restarting, state="RESTARTING" if restarting else "FATAL")
        data = ScrapeData(
            source="supervisord", up=True, state=str(state.get("statename", "RUNNING")),
            version="" if isinstance(version, xmlrpc.client.Fault) else str(version),
            identification="" if isinstance(ident, xmlrpc.client.Fault) else str(ident),
        )
        if isinstance(infos, xmlrpc.client.Fault):
            return data
        for i in infos:
            start = float(i["start"] or 0)
            running = i["statename"] == "RUNNING"
            data.processes.append(ProcessView(
                group=i["group"], name=i["name"], state=i["statename"], pid=int(i["pid"] or 0),
                start_time=start, uptime=max(0.0, float(i["now"]) - start) if running and start else 0.0,
                exit_status=i["exitstatus"],
                state_since=start if i["statename"] in ("STARTING", "RUNNING", "STOPPING") else float(i["stop"] or 0),
            ))
        return data
