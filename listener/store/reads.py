"""The store's read side: every query `lookout` and the exporter ask, returning frozen dataclasses.

The listener writes the store; `lookout` and the exporter only read it. They used to write their
own SELECTs, which made the schema (and worse, the wording of history lines) a contract over three
programs. Here is the one place that knows the tables: a reader asks a named question and gets
rows with named fields, so a column can move, or a history line be reworded, by editing this file
and the writer beside it.

A StoreReader wraps one read-only connection opened as every reader opens it (schema.connect with
readonly=True: READER_BUSY_TIMEOUT, no schema or migration run, so a reader never writes).
Queries raise sqlite3.Error as the driver does: each caller keeps its own answer to an unreadable
store (the exporter falls back to supervisord, `lookout status` exits 2, the DELIVERY lines say
nothing).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from ..rules.orphans import Orphan
from .delivery import DeliveryStore, Silence
from .schema import connect
from .state import orphans_in


@dataclass(frozen=True)
class ProcessRow:
    """A process supervisord runs, as the listener last recorded it (the exporter's view)."""

    group: str
    name: str
    state: str
    state_since: float
    pid: int
    last_start: float  # 0: never started
    last_exit_status: int | None
    restarts: int
    unexpected_exits: int
    crash_looping: bool
    braked: bool
    remediation_exhausted: bool
    stopped_by: str = ""  # who stopped it last: "operator", "lookout", "" (not known)


@dataclass(frozen=True)
class ProbeRow:
    namespec: str
    probe: str
    healthy: bool | None  # None: not judged since the process started
    last_ok: bool | None
    last_detail: str
    last_duration: float
    failures_total: int
    judged: bool  # False: its last run could not read its evidence (schema 5; an older store: True)


@dataclass(frozen=True)
class RemediationCount:
    namespec: str
    action: str
    result: str
    count: int


@dataclass(frozen=True)
class AlertRow:
    """An open alert; for a group's own alert (quorum) namespec is the group's name."""

    namespec: str
    family: str
    kind: str
    severity: str
    opened_at: float
    detail: str
    action_taken: str


@dataclass(frozen=True)
class RestartCount:
    """Restarts (supervisord's automatic ones and lookout's) in the last hour and the last day."""

    last_hour: int = 0
    last_day: int = 0


@dataclass(frozen=True)
class HistorySpan:
    oldest: float | None
    kept: int  # rows the bounded history still holds for the process


@dataclass(frozen=True)
class ExitRow:
    text: str  # 'exit status 3', 'killed by SIGKILL'
    status: int | None  # -1: killed by a signal; None: not known
    at: float | None


@dataclass(frozen=True)
class LookoutRow:
    """What lookout does or may do about a process: its brake, who stopped it, its action in flight."""

    namespec: str
    braked: bool
    brake_resume_at: float | None
    stopped_by: str
    action_kind: str = ""
    action_step: str = ""
    acting: bool = False  # an action is in flight (action_kind and action_step say which, maybe "")
    unsettled: bool = False  # a failure episode not over yet (failing_since, crash loop): "not stable yet"


@dataclass(frozen=True)
class HoldRow:
    namespec: str
    since: float  # the oldest unreleased hold
    reason: str


@dataclass(frozen=True)
class ReleaseWaiting:
    """What a released hold lets happen now."""

    brake_waits: bool  # the crash-loop brake waits to start it again
    restart_wanted: bool  # a probe's restart was held back


@dataclass(frozen=True)
class RetriedTarget:
    """A target whose messages are being retried: how many wait, since when, the last error."""

    key: str
    label: str
    waiting: int
    failing_since: float | None
    error: str


@dataclass(frozen=True)
class TargetSince:
    """A target and a time: a send out since then (slow_sends), or hanging since then (hanging_targets)."""

    key: str
    label: str
    since: float
    error: str = ""


@dataclass(frozen=True)
class HistoryRow:
    at: float
    kind: str
    detail: str


# `lookout history`'s order: by time, not by insertion (an exit's status is read after later
# events and stored with the exit's own time); at one instant the state change, then the exit it
# was, then what followed from it, as inserted.
_HISTORY_ORDER = "at, CASE kind WHEN 'state' THEN 0 WHEN 'exit' THEN 1 ELSE 2 END, id"
_PROCESS_COLUMNS = ("grp, name, state, state_since, pid, last_start, last_exit_status, restarts, unexpected_exits, "
                    "crash_looping, braked, remediation_exhausted, stopped_by")


def _flag(value: object) -> bool | None:
    return None if value is None else bool(value)


class StoreReader:
    """One read-only connection and the named questions `lookout` and the exporter ask of it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open(cls, path: str) -> StoreReader:
        """Raises StoreUnavailable (or StoreCorrupt) as schema.connect does."""
        return cls(connect(path, readonly=True))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the listener itself --------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        """The meta table: pids, supervisord's version, the last reconcile, the scheduler's stats."""
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def heartbeat(self) -> float | None:
        """When the listener last heard an event (or a tick); None before its first."""
        row = self.conn.execute("SELECT last_event_at FROM stream WHERE id = 1").fetchone()
        return float(row[0]) if row else None

    # ---- processes --------------------------------------------------------------------------

    def present_processes(self) -> list[ProcessRow]:
        """The processes supervisord runs (not those removed from its config), by group and name."""
        rows = self.conn.execute(f"SELECT {_PROCESS_COLUMNS} FROM processes WHERE present = 1 "
                                 "ORDER BY grp, name").fetchall()
        return [ProcessRow(r["grp"], r["name"], r["state"], float(r["state_since"] or 0), int(r["pid"] or 0),
                           float(r["last_start"] or 0), r["last_exit_status"], r["restarts"], r["unexpected_exits"],
                           bool(r["crash_looping"]), bool(r["braked"]), bool(r["remediation_exhausted"]),
                           r["stopped_by"] or "")
                for r in rows]

    def namespecs(self, *, present_only: bool = True) -> list[str]:
        """The processes the store knows, sorted; present_only: those supervisord runs now."""
        where = "WHERE present = 1 " if present_only else ""
        return [r[0] for r in self.conn.execute(f"SELECT namespec FROM processes {where}ORDER BY namespec")]

    def last_exits(self) -> dict[str, ExitRow]:
        """The last unexpected exit of each process, as the listener recorded it (its columns)."""
        return {r["namespec"]: ExitRow(r["last_exit_text"], r["last_exit_status"], r["last_exit_at"])
                for r in self.conn.execute("SELECT namespec, last_exit_text, last_exit_status, last_exit_at "
                                           "FROM processes WHERE last_exit_text != ''")}

    def lookout_states(self) -> list[LookoutRow]:
        """The brake, who stopped each process, and lookout's action in flight (a JSON column)."""
        out = []
        for r in self.conn.execute("SELECT namespec, braked, brake_resume_at, stopped_by, action, failing_since, "
                                   "crash_looping FROM processes"):
            action = json.loads(r["action"]) if r["action"] else {}
            out.append(LookoutRow(r["namespec"], bool(r["braked"]), r["brake_resume_at"], r["stopped_by"] or "",
                                  str(action.get("kind", "")), str(action.get("step", "")), bool(action),
                                  r["failing_since"] is not None or bool(r["crash_looping"])))
        return out

    def dependency_waits(self) -> dict[str, tuple[str, float | None]]:
        """The processes that owe a start once their needs are ready ([[dependencies]]): namespec ->
        ("start-up" or "recovery", since when). Nothing from a store older than schema 8."""
        try:
            rows = self.conn.execute("SELECT namespec, needs_wait, waiting_since FROM processes WHERE needs_wait != ''")
            return {r[0]: (r[1], r[2]) for r in rows}
        except sqlite3.OperationalError:
            return {}

    def exits_expected(self) -> dict[str, bool]:
        """Whether each process's last exit was expected (its EXITED event, by exitcodes), where known."""
        try:
            rows = self.conn.execute("SELECT namespec, last_exit_expected FROM processes "
                                     "WHERE last_exit_expected IS NOT NULL")
            return {r[0]: bool(r[1]) for r in rows}
        except sqlite3.OperationalError:
            return {}

    def release_waiting(self, namespec: str) -> ReleaseWaiting | None:
        """What waited on a hold of the process (None: the store does not know it)."""
        row = self.conn.execute("SELECT braked AND brake_resume_at IS NOT NULL, remediation_wanted != '' "
                                "FROM processes WHERE namespec = ?", (namespec,)).fetchone()
        return None if row is None else ReleaseWaiting(bool(row[0]), bool(row[1]))

    # ---- probes, alerts, holds, silences, orphans -------------------------------------------

    def probes(self, *, by_name: bool = False) -> list[ProbeRow]:
        """Each probe's view of each process (stored order, or by_name: by process and probe).
        SELECT *: a store older than schema 5 has no last_judged (it judged every run)."""
        order = " ORDER BY namespec, probe" if by_name else ""
        out = []
        for r in self.conn.execute(f"SELECT * FROM probes{order}"):
            judged = bool(r["last_judged"]) if "last_judged" in r.keys() else True  # noqa: SIM118 (a Row)
            out.append(ProbeRow(r["namespec"], r["probe"], _flag(r["healthy"]), _flag(r["last_ok"]), r["last_detail"],
                                float(r["last_duration"] or 0), int(r["failures_total"] or 0), judged))
        return out

    def open_alerts(self) -> list[AlertRow]:
        """The open alerts, oldest first."""
        return [AlertRow(*r) for r in self.conn.execute(
            "SELECT namespec, family, kind, severity, opened_at, detail, action_taken FROM alerts "
            "WHERE resolved_at IS NULL ORDER BY opened_at")]

    def open_holds(self) -> dict[str, HoldRow]:
        """The processes an operator holds (`lookout hold`), with the oldest hold's time."""
        return {ns: HoldRow(ns, since, reason or "") for ns, since, reason in self.conn.execute(
            "SELECT namespec, MIN(created_at), MAX(reason) FROM holds WHERE released_at IS NULL GROUP BY namespec")}

    def open_hold(self, namespec: str) -> HoldRow | None:
        row = self.conn.execute("SELECT created_at, reason FROM holds WHERE namespec = ? AND released_at IS NULL",
                                (namespec,)).fetchone()
        return None if row is None else HoldRow(namespec, row[0], row[1] or "")

    def hold_seen(self, hold_id: int) -> bool:
        """Whether the listener has applied the hold (it marks it seen)."""
        row = self.conn.execute("SELECT seen_at FROM holds WHERE id = ?", (hold_id,)).fetchone()
        return row is not None and row[0] is not None

    def silences(self, now: float) -> list[Silence]:
        """The silences in force or still to come: the notifier's own query, so they agree."""
        return DeliveryStore(self.conn).silences(now)

    def orphans(self) -> list[Orphan]:
        """Processes dead supervisords left running, not yet seen gone (whether they run: /proc's to say)."""
        return orphans_in(self.conn)

    def remediation_counts(self) -> list[RemediationCount]:
        return [RemediationCount(*r) for r in self.conn.execute(
            "SELECT namespec, action, result, count FROM remediation_stats")]

    # ---- delivery ---------------------------------------------------------------------------

    def outbox_pending(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM outbox WHERE status = 'pending'").fetchone()[0]

    def notification_counts(self) -> dict[tuple[str, str], int]:
        """(scheme, result) -> messages, for lookout_notifications_total."""
        return {(s, r): c for s, r, c in self.conn.execute("SELECT scheme, result, count FROM notification_stats")}

    def targets_failing(self) -> dict[str, bool]:
        """Each target's label -> whether it hangs or its messages are being retried. A store older
        than schema 5 has no targets table: nothing."""
        try:
            return {label: bool(failing) for label, failing in self.conn.execute(
                "SELECT target_label, hanging_since IS NOT NULL OR EXISTS (SELECT 1 FROM outbox o WHERE "
                "o.target_key = t.target_key AND o.status = 'pending' AND o.attempts > 0) FROM targets t")}
        except sqlite3.Error:
            return {}

    def retried_targets(self) -> list[RetriedTarget]:
        """Targets with pending messages of which some failed, with the newest failure's error."""
        return [RetriedTarget(key, label, n, since, error or "") for key, label, n, since, error in self.conn.execute(
            "SELECT target_key, target_label, COUNT(*), MIN(CASE WHEN attempts > 0 THEN created_at END), "
            "(SELECT last_error FROM outbox o WHERE o.target_key = p.target_key AND o.status = 'pending' "
            "AND o.attempts > 0 ORDER BY o.id DESC LIMIT 1) FROM outbox p WHERE status = 'pending' "
            "GROUP BY target_key HAVING MAX(attempts) > 0")]

    def slow_sends(self, out_since: float) -> list[TargetSince]:
        """Targets with a send out since `out_since` or earlier, no answer yet (schema 5)."""
        return [TargetSince(*r) for r in self.conn.execute(
            "SELECT target_key, MIN(target_label), MIN(sending_since) FROM outbox WHERE status = 'pending' "
            "AND sending_since IS NOT NULL GROUP BY target_key HAVING MIN(sending_since) <= ?", (out_since,))]

    def hanging_targets(self) -> list[TargetSince]:
        """Targets whose sends get no answer within their deadline (schema 5)."""
        return [TargetSince(*r) for r in self.conn.execute(
            "SELECT target_key, target_label, hanging_since, last_error FROM targets WHERE hanging_since IS NOT NULL")]

    def maybe_delivered(self) -> dict[str, int]:
        """Target key -> messages maybe delivered (sent in full, not answered in time) in its current
        episode: pending ones, and those given up on since it hangs (schema 5)."""
        return dict(self.conn.execute(
            "SELECT o.target_key, COUNT(*) FROM outbox o LEFT JOIN targets t ON t.target_key = o.target_key "
            "WHERE o.copies > 0 AND (o.status = 'pending' OR (o.status = 'maybe' AND "
            "o.next_attempt_at >= t.hanging_since)) GROUP BY o.target_key").fetchall())

    # ---- history ----------------------------------------------------------------------------

    def history_namespecs(self) -> list[str]:
        """Processes the bounded history still tells of (a program since removed), sorted."""
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT namespec FROM history WHERE namespec LIKE '%:%' ORDER BY namespec")]

    def history(self, namespec: str, since: float) -> list[HistoryRow]:
        """One process's history from `since` on, in the order things happened."""
        return [HistoryRow(*r) for r in self.conn.execute(
            f"SELECT at, kind, detail FROM history WHERE namespec = ? AND at >= ? ORDER BY {_HISTORY_ORDER}",
            (namespec, since))]

    def history_spans(self) -> dict[str, HistorySpan]:
        """Per process: its oldest history row and how many are kept (the table is bounded)."""
        return {ns: HistorySpan(oldest, kept) for ns, oldest, kept in self.conn.execute(
            "SELECT namespec, MIN(at), COUNT(*) FROM history GROUP BY namespec")}

    def restart_counts(self, now: float) -> dict[str, RestartCount]:
        """Restarts per process in the hour and the day before `now`: supervisord's own (a STARTING
        from EXITED or BACKOFF) and lookout's (its restart action), from the history."""
        counts: dict[str, list[int]] = {}
        for ns, recent, n in self._history_facts(
                "SELECT namespec, at >= ?, COUNT(*) FROM history WHERE restart != '' AND at >= ? "
                "GROUP BY namespec, at >= ?", (now - 3600, now - 86400, now - 3600)):
            hour_day = counts.setdefault(ns, [0, 0])
            hour_day[1] += n
            if recent:
                hour_day[0] += n
        return {ns: RestartCount(h, d) for ns, (h, d) in counts.items()}

    def history_exits(self) -> dict[str, ExitRow]:
        """Each process's newest exit in the history, which keeps the last exit whose status is
        known even while the newest one is still being looked up."""
        return {ns: ExitRow(text or detail, status, at) for ns, at, detail, status, text in self._history_facts(
            "SELECT namespec, MAX(at), detail, exit_status, exit_text FROM history WHERE kind = 'exit' "
            "GROUP BY namespec")}

    def _history_facts(self, sql: str, args: tuple = ()) -> list[tuple]:
        """The history's fact columns (schema 6); a store no listener of this version has opened yet
        has none: nothing to count until it does (it migrates the store at its start)."""
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such column" not in str(exc):
                raise
            return []

