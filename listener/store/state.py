"""Persisting the rules' state: one transaction per input, committed before the listener acks."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, fields
from operator import attrgetter

from ...config import HistorySettings
from ...text import clean_name
from ..rules.models import (
    FIRING,
    REMINDER,
    RESOLVED,
    UPDATE,
    Alert,
    DueEvent,
    Hold,
    Notice,
    Outcome,
    PendingAction,
    ProbeState,
    ProcessRecord,
    SeenEvent,
)
from ..rules.orphans import Orphan
from ..rules.sequence import StreamPosition
from .clockshift import ClockStep, reframe_outbox, shift_loop_rows
from .schema import Transaction, get_meta, set_meta

_RECORD_FIELDS = [f.name for f in fields(ProcessRecord)]
_RECORD_COLUMNS = ["grp" if n == "group" else n for n in _RECORD_FIELDS]
_UPSERT_RECORD = (
    f"INSERT INTO processes(namespec, {', '.join(_RECORD_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(_RECORD_COLUMNS) + 1))}) "
    "ON CONFLICT(namespec) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _RECORD_COLUMNS)
)
_UPSERT_STREAM = (
    "INSERT INTO stream(id, run, pool, poolserial, serial, last_event_at) VALUES (1, ?, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET run = excluded.run, pool = excluded.pool, poolserial = excluded.poolserial, "
    "serial = excluded.serial, last_event_at = excluded.last_event_at"
)
_ALERT_COLUMNS = [
    "namespec", "kind", "severity", "opened_at", "updated_at", "failures", "restarts_at_open",
    "tags", "detail", "previous_kind", "previous_severity", "last_notice_at", "resolved_at", "resolution",
    "family", "action_taken", "evidence", "acting_since", "back_at", "at_least",
    "cause", "impact", "gather_until",
]
_LIST_FIELDS = [i for i, f in enumerate(fields(ProcessRecord)) if f.type in ("list[float]",)]
_ACTION_FIELD = [f.name for f in fields(ProcessRecord)].index("action")
_DUE_FIELD = [f.name for f in fields(ProcessRecord)].index("own_event_due")
_BOOL_FIELDS = [f.name for f in fields(ProcessRecord) if f.type == "bool"]
_PROBE_FIELDS = [f.name for f in fields(ProbeState)]
_UPSERT_PROBE = (
    f"INSERT INTO probes({', '.join(_PROBE_FIELDS)}) VALUES ({', '.join('?' * len(_PROBE_FIELDS))}) "
    "ON CONFLICT(namespec, probe) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _PROBE_FIELDS[2:])
)


def record_from_row(row: sqlite3.Row) -> ProcessRecord:
    values = {name: row[col] for name, col in zip(_RECORD_FIELDS, _RECORD_COLUMNS)}
    for i in _LIST_FIELDS:
        name = _RECORD_FIELDS[i]
        values[name] = json.loads(values[name] or "[]")
    for name in _BOOL_FIELDS:
        values[name] = bool(values[name])
    values["action"] = _action_from_json(values["action"])
    values["own_event_due"] = _due_from_text(values["own_event_due"])
    values["group"], values["name"] = clean_name(values["group"]), clean_name(values["name"])  # (older stores)
    return ProcessRecord(**values)


def _action_from_json(text: str | None) -> PendingAction | None:
    if not text:
        return None
    try:
        values = json.loads(text)
        values["seen"] = _seen_from(values.get("seen") or [])
        return PendingAction(**values)
    except (ValueError, TypeError, KeyError):  # written by another version: the start-up reconcile decides afresh
        return None


def _seen_from(seen: list | str) -> list[SeenEvent]:
    """JSON objects; a store before schema 6 wrote "S<pid> R" (stop step) or "STARTING" (start step)."""
    if isinstance(seen, list):
        return [SeenEvent(**e) for e in seen]
    if seen == "STARTING":
        return [SeenEvent("STARTING")]
    return [SeenEvent("STOPPED", int(t[1:]) if t[1:].isdigit() else 0) if t[0] == "S" else SeenEvent("STARTING")
            for t in seen.split()]


def _due_from_text(text: str | None) -> list[DueEvent]:
    """JSON objects; a store before schema 6 wrote "STOPPED <pid> <since>;STARTING 0 <since>;STOPPED ?"."""
    if not text:
        return []
    if text.startswith("["):
        return [DueEvent(**d) for d in json.loads(text)]
    due = []
    for marker in filter(None, text.split(";")):
        state, _, rest = marker.partition(" ")
        pid, _, since = rest.partition(" ")
        due.append(DueEvent(state, stale=True) if pid == "?" else
                   DueEvent(state, int(pid) if pid.isdigit() else 0, float(since or 0.0)))
    return due


def probe_state_from_row(row: sqlite3.Row) -> ProbeState:
    values = {name: row[name] for name in _PROBE_FIELDS}
    for name in ("healthy", "last_ok", "last_judged"):
        values[name] = None if values[name] is None else bool(values[name])
    return ProbeState(**values)


def alert_from_row(row: sqlite3.Row) -> Alert:
    values = {c: row[c] for c in _ALERT_COLUMNS}
    values["tags"] = tuple(json.loads(values["tags"] or "[]"))
    values["at_least"] = bool(values["at_least"])
    return Alert(id=row["id"], **values)


_RECORD_GETTER = attrgetter(*_RECORD_FIELDS)
_ORPHAN_FIELDS = [f.name for f in fields(Orphan)]
_UPSERT_ORPHAN = (
    f"INSERT INTO orphans({', '.join(_ORPHAN_FIELDS)}) VALUES ({', '.join('?' * len(_ORPHAN_FIELDS))}) "
    "ON CONFLICT(pid, started) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _ORPHAN_FIELDS[3:])
)


def orphans_in(conn: sqlite3.Connection) -> list[Orphan]:
    """The orphans not yet seen gone, oldest generation first (whether they still run is /proc's
    to say). An older store without the table has none."""
    try:
        rows = conn.execute(f"SELECT {', '.join(_ORPHAN_FIELDS)} FROM orphans WHERE gone_at IS NULL "
                            "ORDER BY left_at, namespec, pid").fetchall()
    except sqlite3.OperationalError:  # no such table (a store the listener has not migrated yet)
        return []
    return [Orphan(**{**dict(zip(_ORPHAN_FIELDS, row)), "death_seen": bool(row[5])}) for row in rows]


def _save_orphans(c: sqlite3.Connection, orphans: list[Orphan]) -> None:
    c.executemany(_UPSERT_ORPHAN, [[getattr(o, f) for f in _ORPHAN_FIELDS] for o in orphans])


def _record_values(rec: ProcessRecord) -> list:
    values = list(_RECORD_GETTER(rec))  # on the per-event path: one C call, not 34 getattrs
    for i in _LIST_FIELDS:
        values[i] = json.dumps(values[i]) if values[i] else "[]"
    action = values[_ACTION_FIELD]
    values[_ACTION_FIELD] = json.dumps(asdict(action)) if action is not None else ""
    due = values[_DUE_FIELD]
    values[_DUE_FIELD] = json.dumps([asdict(d) for d in due]) if due else ""
    return [rec.namespec, *values]


HISTORY_PRUNE_EVERY = 1000  # history rows written between two count-bound prunes


class StateStore:
    def __init__(self, conn: sqlite3.Connection, history: HistorySettings | None = None) -> None:
        self.conn = conn
        self.history = history or HistorySettings()
        self._history_written = 0
        # Pruned to max_rows minus one batch, so the table never holds more than max_rows.
        self._prune_every = min(HISTORY_PRUNE_EVERY, self.history.max_rows // 10)

    # ---- loading at start ---------------------------------------------------------------

    def load_records(self) -> list[ProcessRecord]:
        return [record_from_row(r) for r in self.conn.execute("SELECT * FROM processes")]

    def load_open_alerts(self) -> list[Alert]:
        rows = self.conn.execute("SELECT * FROM alerts WHERE resolved_at IS NULL")
        return [alert_from_row(r) for r in rows]

    def load_probe_states(self) -> list[ProbeState]:
        return [probe_state_from_row(r) for r in self.conn.execute("SELECT * FROM probes")]

    def active_holds(self) -> list[Hold]:
        rows = self.conn.execute("SELECT id, namespec, created_at, reason FROM holds WHERE released_at IS NULL "
                                 "ORDER BY id")
        return [Hold(*row) for row in rows]

    def data_version(self) -> int:
        """Changes when another connection (`lookout hold`, `silence`) commits: a cheap poll."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def load_orphans(self) -> list[Orphan]:
        return orphans_in(self.conn)

    def stopping(self) -> bool:
        return get_meta(self.conn, "stopping") == "1"

    def meta(self, key: str) -> str | None:
        return get_meta(self.conn, key)

    def last_event_at(self) -> float:
        row = self.conn.execute("SELECT last_event_at FROM stream WHERE id = 1").fetchone()
        return float(row[0]) if row else 0.0

    def position(self) -> StreamPosition | None:
        row = self.conn.execute("SELECT run, pool, poolserial, serial FROM stream WHERE id = 1").fetchone()
        return StreamPosition(*row) if row else None

    # ---- per input ----------------------------------------------------------------------

    def commit(
        self,
        outcome: Outcome,
        *,
        stopping: bool,
        position: StreamPosition | None = None,
        event_at: float = 0.0,
        meta: dict[str, object] | None = None,
        orphans: list[Orphan] | None = None,
        shift: ClockStep | None = None,
        outbox_frame: tuple[float, str | None] | None = None,
    ) -> None:
        """One transaction; ``position`` and ``event_at`` come with each event (the dedup key
        is committed with the event's effects, so a redelivery after a crash is recognised).
        ``orphans``: found, or seen gone (gone_at set). ``shift``: the wall clock stepped; the rows
        the engine does not hold move last, with what this outcome wrote before the step (a held
        commit). ``outbox_frame``: (offset, boot) to bring the outbox into at start
        (clockshift.reframe_outbox)."""
        with Transaction(self.conn) as c:
            if outbox_frame is not None:  # (first: it reads the boot the meta below replaces)
                reframe_outbox(c, *outbox_frame)
            if orphans:
                _save_orphans(c, orphans)
            if outcome.records:
                c.executemany(_UPSERT_RECORD, [_record_values(r) for r in outcome.records.values()])
            for alert in outcome.alerts.values():
                self._save_alert(c, alert)
            for notice in outcome.notices:
                self._queue_notice(c, notice, outcome.alerts[notice.key])
            if outcome.probe_states:
                c.executemany(_UPSERT_PROBE, [[getattr(st, f) for f in _PROBE_FIELDS]
                                              for st in outcome.probe_states.values()])
            if outcome.history:
                c.executemany("INSERT INTO history(at, namespec, kind, detail, restart, exit_status, exit_text) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?)",
                              [(h.at, h.namespec, h.kind, h.detail[:1000], h.restart, h.exit_status, h.exit_text)
                               for h in outcome.history])
                self._history_written += len(outcome.history)
                if self._history_written >= self._prune_every:
                    self._history_written = 0
                    self._bound_history(c)
            for namespec, action, result in outcome.remediations:
                c.execute("INSERT INTO remediation_stats(namespec, action, result, count) VALUES (?, ?, ?, 1) "
                          "ON CONFLICT(namespec, action, result) DO UPDATE SET count = count + 1",
                          (namespec, action, result))
            if outcome.holds_seen:
                c.executemany("UPDATE holds SET seen_at = ? WHERE id = ? AND seen_at IS NULL",
                              [(at, hold_id) for hold_id, at in outcome.holds_seen])
            if outcome.holds_released:
                c.executemany("UPDATE holds SET released_at = ?, released_by = ? WHERE namespec = ? "
                              "AND released_at IS NULL", [(at, why, ns) for ns, why, at in outcome.holds_released])
            items: dict[str, object] = dict(meta or {})
            if outcome.flags_changed:
                items["stopping"] = int(stopping)
            if items:
                set_meta(c, items)
            if position is not None:
                c.execute(_UPSERT_STREAM, (position.run, position.pool, position.poolserial, position.serial, event_at))
            if shift is not None:
                shift_loop_rows(c, shift)

    def rewrite(self, records: list[ProcessRecord], alerts: list[Alert], position: StreamPosition | None,
                stopping: bool, now: float, holds: list[Hold] | None = None, orphans: list[Orphan] | None = None
                ) -> None:
        """After the file was deleted or replaced: the listener's memory is the truth. Open alerts
        already in the file (a restored copy) are superseded; ours get new ids. The holds it applies
        and the orphans it knows are written back (neither may vanish with the file)."""
        with Transaction(self.conn) as c:
            c.execute("UPDATE orphans SET gone_at = ? WHERE gone_at IS NULL", (now,))
            _save_orphans(c, orphans or [])
            c.execute("UPDATE holds SET released_at = ?, released_by = 'superseded' WHERE released_at IS NULL", (now,))
            c.executemany("INSERT INTO holds(namespec, created_at, reason, seen_at) VALUES (?, ?, ?, ?)",
                          [(h.namespec, h.created_at, h.reason, now) for h in holds or ()])
            c.execute("UPDATE alerts SET resolved_at = updated_at, resolution = 'superseded' WHERE resolved_at IS NULL")
            c.executemany(_UPSERT_RECORD, [_record_values(r) for r in records])
            for alert in alerts:
                alert.id = None
                self._save_alert(c, alert)
            set_meta(c, {"stopping": int(stopping)})
            if position is not None:
                c.execute(_UPSERT_STREAM, (position.run, position.pool, position.poolserial, position.serial, now))

    def forget_probes(self, keep: set[tuple[str, str]]) -> None:
        """Probe states of probes or processes that no longer exist (config changed)."""
        gone = [k for k in self.conn.execute("SELECT namespec, probe FROM probes") if tuple(k) not in keep]
        if gone:
            with Transaction(self.conn) as c:
                c.executemany("DELETE FROM probes WHERE namespec = ? AND probe = ?", [tuple(k) for k in gone])

    def _bound_history(self, c: sqlite3.Connection) -> None:
        """At most history.max_rows in all (pruned to that minus the next batch, so the bound
        holds between prunes too) and about history.per_process for one process: oldest go."""
        h = self.history
        for (ns,) in c.execute("SELECT namespec FROM history GROUP BY namespec HAVING COUNT(*) > ?",
                               (h.per_process,)).fetchall():
            c.execute("DELETE FROM history WHERE namespec = ? AND id <= (SELECT id FROM history WHERE namespec = ? "
                      "ORDER BY id DESC LIMIT 1 OFFSET ?)", (ns, ns, h.per_process))
        c.execute("DELETE FROM history WHERE id <= (SELECT id FROM history ORDER BY id DESC LIMIT 1 OFFSET ?)",
                  (h.max_rows - self._prune_every,))

    def prune(self, now: float) -> None:
        """Keep the store small: delivered messages and closed alerts older than a week, history
        by age and by count."""
        with Transaction(self.conn) as c:
            c.execute("DELETE FROM history WHERE at < ?", (now - self.history.max_age,))
            self._bound_history(c)
            week = now - 7 * 86400
            c.execute("DELETE FROM holds WHERE released_at IS NOT NULL AND released_at < ?", (week,))
            c.execute("DELETE FROM orphans WHERE gone_at IS NOT NULL AND gone_at < ?", (week,))
            c.execute("DELETE FROM outbox WHERE status != 'pending' AND created_at < ?", (week,))
            c.execute(
                "DELETE FROM notifications WHERE dispatched_at IS NOT NULL AND created_at < ?",
                (week,),
            )
            c.execute(
                "DELETE FROM alerts WHERE resolved_at IS NOT NULL AND resolved_at < ? AND id NOT IN "
                "(SELECT alert_id FROM notifications WHERE dispatched_at IS NULL)",
                (week,),
            )

    # ---- helpers ------------------------------------------------------------------------

    @staticmethod
    def _save_alert(c: sqlite3.Connection, alert: Alert) -> None:
        values = [getattr(alert, col) for col in _ALERT_COLUMNS]
        values[_ALERT_COLUMNS.index("tags")] = json.dumps(list(alert.tags))
        if alert.id is None:
            cur = c.execute(
                f"INSERT INTO alerts({', '.join(_ALERT_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_ALERT_COLUMNS))})",
                values,
            )
            alert.id = cur.lastrowid
        else:
            c.execute(
                f"UPDATE alerts SET {', '.join(f'{col} = ?' for col in _ALERT_COLUMNS)} WHERE id = ?",
                [*values, alert.id],
            )

    @staticmethod
    def _queue_notice(c: sqlite3.Connection, notice: Notice, alert: Alert) -> None:
        """At most one pending firing/reminder per alert, plus its resolution.

        A firing while one is pending means the alert was escalated before anyone heard of
        it: the pending one becomes the escalation, keeping its place in group_wait. A
        resolution supersedes a pending reminder, but never a pending firing: a crash that
        recovered within group_wait is still news, and both go out in the same message.
        Whether to drop a resolution that a silence kept secret is the notifier's call. One pending
        resolution per alert: a second (an amended reason) is the same message.
        """
        pending = c.execute(
            "SELECT id, kind FROM notifications WHERE alert_id = ? AND dispatched_at IS NULL "
            "AND kind != ?",
            (alert.id, RESOLVED),
        ).fetchone()
        if notice.kind == RESOLVED:
            if pending is not None and pending["kind"] in (REMINDER, UPDATE):
                c.execute("DELETE FROM notifications WHERE id = ?", (pending["id"],))
            if c.execute("SELECT 1 FROM notifications WHERE alert_id = ? AND dispatched_at IS NULL AND kind = ?",
                         (alert.id, RESOLVED)).fetchone():
                return  # its resolution was amended before it went out: one message, with the new reason
        elif pending is not None:
            # firing > update > reminder: the pending one takes the stronger kind and renders the
            # alert as it is when sent (with what lookout did about it meanwhile)
            rank = {REMINDER: 0, UPDATE: 1, FIRING: 2}
            if rank[notice.kind] > rank.get(pending["kind"], 0):
                c.execute("UPDATE notifications SET kind = ? WHERE id = ?", (notice.kind, pending["id"]))
            return
        c.execute(
            "INSERT INTO notifications(alert_id, kind, created_at) VALUES (?, ?, ?)",
            (alert.id, notice.kind, notice.at),
        )
