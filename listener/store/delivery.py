"""The notifier's side of the store: pending notifications, the durable outbox, silences."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ...patterns import ProcessPattern
from ..rules.models import Alert, ProcessRecord
from .clockshift import reframe_outbox
from .schema import Transaction
from .state import alert_from_row, record_from_row


@dataclass(frozen=True)
class PendingNotice:
    id: int
    kind: str  # firing, reminder, resolved
    created_at: float
    alert: Alert
    process: ProcessRecord | None
    held: bool = False  # a silence held it back at least once
    heard: bool = False  # a firing of this alert already went to the outbox (delivered, or being delivered)


EVERYTHING: frozenset[int | str] = frozenset({"*"})  # the topics of a message that orders with all


@dataclass(frozen=True)
class About:
    """What an outbox message is about, which orders a target's messages (notifier/ordering.py):
    the alerts it reports, lookout's own news (system), or everything (an alert not yet stored, or
    a row from a store before schema 5). repost: Alertmanager's re-post of what still fires, which
    a newer re-post supersedes and which `lookout history` does not list."""

    alert_ids: tuple[int, ...] = ()
    system: bool = False
    everything: bool = False
    repost: bool = False

    @classmethod
    def alerts(cls, alerts: Iterable[Alert], repost: bool = False) -> About:
        alerts = list(alerts)
        return cls(tuple(sorted({a.id for a in alerts if a.id is not None})),
                   everything=any(a.id is None for a in alerts), repost=repost)

    def topics(self) -> frozenset[int | str]:
        """The alert ids and "system"; EVERYTHING for a message that orders with all."""
        if self.everything:
            return EVERYTHING
        return frozenset(self.alert_ids) | ({"system"} if self.system else set())


SYSTEM_NEWS = About(system=True)
EVERYTHING_ABOUT = About(everything=True)


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    target_key: str
    target_label: str
    scheme: str
    title: str
    body: str
    notify_type: str
    created_at: float
    attempts: int
    next_attempt_at: float = 0.0
    about: About = EVERYTHING_ABOUT
    copies: int = 0  # sends its target's host took in full without answering in time (maybe delivered)


@dataclass(frozen=True)
class TargetRow:
    """A notification target as the notifier last judged it (the targets table)."""

    key: str
    label: str
    scheme: str
    hanging_since: float | None = None  # its sends get no answer within the deadline since then
    last_error: str = ""


@dataclass(frozen=True)
class Silence:
    id: int
    matcher: str
    starts_at: float
    ends_at: float
    reason: str

    def covers(self, namespec: str, now: float) -> bool:
        """The stored text stays the operator's pattern; what it names is patterns.py's answer, the
        same as every other command's (a group alert's bare group name: when it names the group)."""
        if not self.starts_at <= now < self.ends_at or not self.matcher:
            return False
        return ProcessPattern.parse(self.matcher).matches(namespec)


# What a rendered notice said: a change to any of these since it was read is news of its own.
_FINGERPRINT = ("SELECT n.kind, a.kind, a.severity, a.action_taken, a.evidence, a.resolution FROM notifications n "
                "JOIN alerts a ON a.id = n.alert_id WHERE n.id = ? AND n.dispatched_at IS NULL")


def _fingerprint(n: PendingNotice) -> tuple:
    return (n.kind, n.alert.kind, n.alert.severity, n.alert.action_taken, n.alert.evidence, n.alert.resolution)


def _delivery_history(c: sqlite3.Connection, about: About, now: float, what: str) -> None:
    """`lookout history` says whether a message was heard, not only queued (re-posts aside)."""
    if about.repost:
        return
    ids = about.alert_ids
    c.executemany("INSERT INTO history(at, namespec, kind, detail) SELECT ?, namespec, 'notify', ? "
                  "FROM alerts WHERE id = ?", [(now, what, i) for i in ids])


class DeliveryStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # ---- notifications ------------------------------------------------------------------

    def pending_notices(self) -> list[PendingNotice]:
        rows = self.conn.execute(
            "SELECT n.id AS nid, n.kind AS nkind, n.created_at AS ncreated, n.held AS nheld, "
            "EXISTS(SELECT 1 FROM notifications d WHERE d.alert_id = n.alert_id "
            "AND d.dispatched_at IS NOT NULL AND d.kind != 'resolved') AS heard, a.* "
            "FROM notifications n JOIN alerts a ON a.id = n.alert_id "
            "WHERE n.dispatched_at IS NULL ORDER BY n.created_at, n.id"
        ).fetchall()
        if not rows:
            return []
        processes = self._processes({r["namespec"] for r in rows})
        return [
            PendingNotice(
                r["nid"], r["nkind"], r["ncreated"], alert_from_row(r), processes.get(r["namespec"]),
                bool(r["nheld"]), bool(r["heard"]),
            )
            for r in rows
        ]

    def dispatch(self, notice_ids: list[int], messages: list[dict], now: float,
                 history: list[tuple[str, str]] = (), rendered: list[PendingNotice] = ()) -> bool:
        """Turn notices into outbox rows, atomically: nothing is sent twice or lost. `history`:
        (namespec, what) rows for `lookout history` ("firing crashed queued for 2 target(s)": the outbox
        sends and retries them; a failed delivery shows in `lookout_notifications_total`).

        `rendered`: the notices as the messages show them. The listener may have escalated one
        of them (or recorded what lookout did) after they were read; it then merged that news
        into the same pending notice, so marking it dispatched would lose it. Then nothing is
        written and False returned: the caller reads and renders again."""
        with Transaction(self.conn) as c:
            for n in rendered:
                now_row = c.execute(_FINGERPRINT, (n.id,)).fetchone()
                if now_row is None or tuple(now_row) != _fingerprint(n):
                    return False
            c.executemany("INSERT INTO history(at, namespec, kind, detail) VALUES (?, ?, 'notify', ?)",
                          [(now, ns, what) for ns, what in history])
            messages = [{"about": EVERYTHING_ABOUT, **m} for m in messages]  # (said nothing: orders with all)
            for key in {m["target_key"] for m in messages if m["about"].repost}:
                c.execute("UPDATE outbox SET status = 'dropped', last_error = 'superseded by a newer re-post' "
                          "WHERE target_key = ? AND status = 'pending' AND repost = 1",
                          (key,))  # a target that is down keeps one re-post, the latest, not one per interval
            c.executemany(
                "INSERT INTO outbox(target_key, target_label, scheme, title, body, notify_type, created_at, "
                "next_attempt_at, alert_ids, system, everything, repost) VALUES (:target_key, :target_label, "
                ":scheme, :title, :body, :notify_type, :now, :now, :alert_ids, :system, :everything, :repost)",
                [{**m, "now": now, "alert_ids": json.dumps(m["about"].alert_ids), "system": m["about"].system,
                  "everything": m["about"].everything, "repost": m["about"].repost} for m in messages],
            )
            c.executemany(
                "UPDATE notifications SET dispatched_at = ? WHERE id = ?",
                [(now, i) for i in notice_ids],
            )
        return True

    def announced_open_alerts(self) -> list[PendingNotice]:
        """Open alerts whose firing was delivered: what Alertmanager must keep hearing about."""
        rows = self.conn.execute(
            "SELECT a.* FROM alerts a WHERE a.resolved_at IS NULL AND EXISTS (SELECT 1 FROM notifications n "
            "WHERE n.alert_id = a.id AND n.dispatched_at IS NOT NULL AND n.kind != 'resolved')"
        ).fetchall()
        processes = self._processes({r["namespec"] for r in rows})
        return [PendingNotice(0, "firing", 0.0, alert_from_row(r), processes.get(r["namespec"])) for r in rows]

    def _processes(self, namespecs: set[str]) -> dict[str, ProcessRecord]:
        names, found = sorted(namespecs), {}
        for i in range(0, len(names), 500):
            chunk = names[i : i + 500]
            for p in self.conn.execute(
                f"SELECT * FROM processes WHERE namespec IN ({','.join('?' * len(chunk))})", chunk
            ):
                found[p["namespec"]] = record_from_row(p)
        return found

    def mark_held(self, notice_ids: list[int]) -> None:
        with Transaction(self.conn) as c:
            c.executemany("UPDATE notifications SET held = 1 WHERE id = ?", [(i,) for i in notice_ids])

    def discard(self, notice_ids: list[int], now: float) -> None:
        """Settle notices that will never be sent (resolved while a silence hid them)."""
        self.dispatch(notice_ids, [], now)

    # ---- outbox -------------------------------------------------------------------------

    def pending_messages(self, per_target: int = 1000) -> list[OutboxMessage]:
        """The messages not yet sent, each target's oldest `per_target` in the order they were
        written (a bound per target: one target's backlog never hides another's messages)."""
        rows = self.conn.execute(  # without title and body: read for the few that are sent (with_text)
            "SELECT id, target_key, target_label, scheme, '', '', notify_type, created_at, attempts, "
            "next_attempt_at, alert_ids, system, everything, repost, copies FROM (SELECT id, target_key, "
            "target_label, scheme, notify_type, created_at, attempts, next_attempt_at, alert_ids, system, "
            "everything, repost, copies, ROW_NUMBER() OVER (PARTITION BY target_key ORDER BY id) AS n "
            "FROM outbox WHERE status = 'pending') WHERE n <= ? ORDER BY target_key, id",
            (per_target,),
        ).fetchall()
        return [OutboxMessage(*r[:10], About(tuple(json.loads(r[10])), bool(r[11]), bool(r[12]), bool(r[13])), r[14])
                for r in rows]

    def with_text(self, msg: OutboxMessage) -> OutboxMessage | None:
        """The message with its title and body, read when it is about to be sent; None if it is no
        longer pending (a store recreated under the listener)."""
        row = self.conn.execute("SELECT title, body FROM outbox WHERE id = ? AND status = 'pending'",
                                (msg.id,)).fetchone()
        return None if row is None else replace(msg, title=row[0], body=row[1])

    def failing_since(self) -> float | None:
        """When the oldest message that has failed and is still to be retried was written: None when
        every message so far went out, or was given up on."""
        row = self.conn.execute("SELECT MIN(created_at) FROM outbox WHERE status = 'pending' AND attempts > 0"
                                ).fetchone()
        return row[0]

    def record_attempt(
        self, msg: OutboxMessage, now: float, *, status: str, error: str = "", retry_at: float = 0.0,
        result: str = "", copy: bool = False, said: str = "",
    ) -> None:
        """status: 'sent', 'pending' (retry at retry_at), 'expired', 'maybe' (given up after copies
        that may have arrived) or 'dropped'. result: the lookout_notifications_total label (success
        or failure by status unless given: timeout, maybe_delivered). copy: this send's request was
        taken in full and not answered in time. said: the `lookout history` line, when not the usual."""
        result = result or ("success" if status == "sent" else "failure")
        with Transaction(self.conn) as c:
            c.execute(
                "UPDATE outbox SET status = ?, attempts = attempts + 1, last_error = ?, next_attempt_at = ?, "
                "sent_at = ?, copies = copies + ?, sending_since = NULL WHERE id = ?",
                (status, error[:500], retry_at or now, now if status == "sent" else None, int(copy), msg.id),
            )
            c.execute(
                "INSERT INTO notification_stats(scheme, result, count) VALUES (?, ?, 1) "
                "ON CONFLICT(scheme, result) DO UPDATE SET count = count + 1",
                (msg.scheme, result),
            )
            if said:
                _delivery_history(c, msg.about, now, said)
            elif status in ("sent", "expired"):
                _delivery_history(c, msg.about, now, f"sent to {msg.target_label}" if status == "sent" else
                                  f"not delivered to {msg.target_label}: given up after {msg.attempts + 1} attempt(s)")

    def give_up_maybe(self, msg: OutboxMessage, now: float, said: str) -> None:
        """Given up on as maybe delivered without a send of its own (its copies were spent before):
        no attempt and no lookout_notifications_total result, only the history line."""
        with Transaction(self.conn) as c:
            if c.execute("UPDATE outbox SET status = 'maybe', next_attempt_at = ?, sending_since = NULL "
                         "WHERE id = ? AND status = 'pending'", (now, msg.id)).rowcount:
                _delivery_history(c, msg.about, now, said)

    def mark_sending(self, msg_id: int, now: float) -> None:
        """Its send is out: `lookout status` shows a send out too long, and a listener that stops
        before the answer leaves the mark for the next one (sends_interrupted)."""
        with Transaction(self.conn) as c:
            c.execute("UPDATE outbox SET sending_since = ? WHERE id = ?", (now, msg_id))

    def sends_interrupted(self) -> int:
        """At start: sends the previous listener left out may have arrived; each counts as a copy."""
        with Transaction(self.conn) as c:
            return c.execute("UPDATE outbox SET copies = copies + 1, sending_since = NULL, last_error = "
                             "'the listener stopped during its send: maybe delivered' WHERE status = 'pending' "
                             "AND sending_since IS NOT NULL").rowcount

    # ---- targets ------------------------------------------------------------------------

    def load_targets(self, configured: list[TargetRow], now: float) -> dict[str, TargetRow]:
        """The configured targets, with what the previous listener knew of them; rows of targets no
        longer configured go."""
        keys = [t.key for t in configured]
        with Transaction(self.conn) as c:
            c.execute(f"DELETE FROM targets WHERE target_key NOT IN ({','.join('?' * len(keys))})", keys)
            c.executemany("INSERT INTO targets(target_key, target_label, scheme, updated_at) VALUES (?, ?, ?, ?) "
                          "ON CONFLICT(target_key) DO UPDATE SET target_label = excluded.target_label, "
                          "scheme = excluded.scheme", [(t.key, t.label, t.scheme, now) for t in configured])
            rows = c.execute("SELECT target_key, target_label, scheme, hanging_since, last_error FROM targets"
                             ).fetchall()
        return {r[0]: TargetRow(*r) for r in rows}

    def save_target(self, target: TargetRow, now: float) -> None:
        with Transaction(self.conn) as c:
            c.execute("INSERT INTO targets(target_key, target_label, scheme, hanging_since, last_error, updated_at) "
                      "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(target_key) DO UPDATE SET "
                      "hanging_since = excluded.hanging_since, last_error = excluded.last_error, "
                      "updated_at = excluded.updated_at",
                      (target.key, target.label, target.scheme, target.hanging_since, target.last_error[:500], now))

    def retries_stepped_back(self, step: float, now: float) -> None:
        """The clock stepped back by `step`: every retry still ahead moves with it."""
        with Transaction(self.conn) as c:
            c.execute("UPDATE outbox SET next_attempt_at = MAX(?, next_attempt_at - ?) "
                      "WHERE status = 'pending' AND next_attempt_at > ?", (now, step, now))

    def reframe_outbox(self, offset: float) -> float:
        """The notifier's frame moved with a step of the wall clock: its pending rows move too."""
        with Transaction(self.conn) as c:
            return reframe_outbox(c, offset, None)

    def backlog(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM outbox WHERE status = 'pending'").fetchone()[0]

    # ---- silences -----------------------------------------------------------------------

    def add_silence(self, matcher: str, starts_at: float, ends_at: float, reason: str) -> int:
        with Transaction(self.conn) as c:
            cur = c.execute(
                "INSERT INTO silences(matcher, starts_at, ends_at, reason, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (matcher, starts_at, ends_at, reason, starts_at),
            )
            return int(cur.lastrowid)

    def silences(self, now: float) -> list[Silence]:
        rows = self.conn.execute(
            "SELECT id, matcher, starts_at, ends_at, reason FROM silences WHERE ends_at > ? "
            "ORDER BY id",
            (now,),
        ).fetchall()
        return [Silence(*r) for r in rows]

    def end_silence(self, silence_id: int, now: float) -> bool:
        with Transaction(self.conn) as c:
            cur = c.execute(
                "UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?",
                (now, silence_id, now),
            )
            return cur.rowcount > 0
