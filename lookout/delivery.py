"""`lookout status`'s DELIVERY lines: the notification targets that are failing, from the store.

A target is failing while its messages are being retried (the outbox), while its sends get no
answer within their deadline (it hangs: the targets table), or while a send has been out for
longer than half its deadline. One line each: how much waits, for how long, why, and how many
messages were maybe delivered (sent in full, not answered in time: retried, 3 copies at most).
Only 'scheme://host' of a target is ever shown; errors are scrubbed of secrets.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass

from .listener.config import Config, format_duration
from .listener.redact import scrub
from .listener.store.files import StoreUnavailable, store_errors
from .listener.store.schema import connect
from .listener.text import clean

SLOW_SEND = 5.0  # a send out this long (or half the deadline, if less) is shown


@dataclass
class TargetTrouble:
    label: str
    waiting: int = 0  # messages pending, when some failed
    failing_since: float | None = None  # the oldest failed message still retried was written then
    error: str = ""
    hanging_since: float | None = None
    maybe: int = 0  # messages that were maybe delivered in this episode
    out_since: float | None = None  # a send out since then, no answer yet

    def line(self, now: float) -> str:
        def since(at: float) -> str:
            return format_duration(max(0.0, now - at))

        parts = []
        error = scrub(clean(self.error or "?"))[:200]
        if self.failing_since is not None:
            parts.append(f"{self.waiting} message(s) waiting, failing for {since(self.failing_since)}: {error}")
        elif self.hanging_since is not None:
            parts.append(f"failing for {since(self.hanging_since)}: {error}")
        if self.hanging_since is not None:
            at = time.strftime("%H:%M:%S", time.localtime(self.hanging_since))
            parts.append(f"it hangs: no answer within its deadline since {at}")
        if self.maybe:
            parts.append(f"{self.maybe} message(s) maybe delivered (sent in full, not answered in time; "
                         "3 copies at most)")
        if self.out_since is not None:
            parts.append(f"a send out for {since(self.out_since)} without an answer")
        return f"DELIVERY {clean(self.label)}: " + "; ".join(parts)


def delivery_lines(config: Config, now: float) -> list[str]:
    """The failing targets, one line each, by label."""
    try:
        with store_errors():
            conn = connect(config.state_path, readonly=True)
            try:
                found = _troubles(conn, now - min(SLOW_SEND, config.notify.timeout / 2))
            finally:
                conn.close()
    except (StoreUnavailable, sqlite3.Error):
        return []  # the table above said what it could; a store too old or busy has nothing to add
    return [t.line(now) for t in sorted(found.values(), key=lambda t: t.label)]


def _troubles(conn: sqlite3.Connection, slow_since: float) -> dict[str, TargetTrouble]:
    found: dict[str, TargetTrouble] = {}
    for key, label, n, since, error in conn.execute(
            "SELECT target_key, target_label, COUNT(*), MIN(CASE WHEN attempts > 0 THEN created_at END), "
            "(SELECT last_error FROM outbox o WHERE o.target_key = p.target_key AND o.status = 'pending' "
            "AND o.attempts > 0 ORDER BY o.id DESC LIMIT 1) FROM outbox p WHERE status = 'pending' "
            "GROUP BY target_key HAVING MAX(attempts) > 0"):
        found[key] = TargetTrouble(label, n, since, error or "")
    with contextlib.suppress(sqlite3.Error):  # a store older than schema 5 knows only the retries
        _hangs(conn, slow_since, found)
    return found


def _hangs(conn: sqlite3.Connection, slow_since: float, found: dict[str, TargetTrouble]) -> None:
    """Sends out too long, targets that hang, and what was maybe delivered meanwhile."""
    for key, label, since in conn.execute(
            "SELECT target_key, MIN(target_label), MIN(sending_since) FROM outbox WHERE status = 'pending' "
            "AND sending_since IS NOT NULL GROUP BY target_key HAVING MIN(sending_since) <= ?", (slow_since,)):
        found.setdefault(key, TargetTrouble(label)).out_since = since
    for key, label, since, error in conn.execute(
            "SELECT target_key, target_label, hanging_since, last_error FROM targets WHERE hanging_since IS NOT NULL"):
        trouble = found.setdefault(key, TargetTrouble(label))
        trouble.hanging_since, trouble.error = since, trouble.error or error
    for key, n in conn.execute(
            "SELECT o.target_key, COUNT(*) FROM outbox o LEFT JOIN targets t ON t.target_key = o.target_key "
            "WHERE o.copies > 0 AND (o.status = 'pending' OR (o.status = 'maybe' AND "
            "o.next_attempt_at >= t.hanging_since)) GROUP BY o.target_key"):
        if key in found:
            found[key].maybe = n
