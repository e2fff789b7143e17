"""What `lookout` writes to the store: an operator's holds and their release.

The listener owns the store; the operator's command writes only these rows, which the listener
reads within a second (it marks a hold seen, and applies a release). They live here so that no
SQL text is written outside the store's package. Silences go through DeliveryStore, the notifier's
own side, because the notifier is what honours them.

Each call is one autocommit statement on the caller's writer connection (schema.connect), as the
command always did: a hold is written at once, with the writer's busy timeout.
"""

from __future__ import annotations

import sqlite3


def add_hold(conn: sqlite3.Connection, namespec: str, reason: str, now: float) -> int:
    """A new hold on the process; its id, to wait for the listener to see it (reads.hold_seen)."""
    return int(conn.execute("INSERT INTO holds(namespec, created_at, reason) VALUES (?, ?, ?)",
                            (namespec, now, reason)).lastrowid)


def release_holds(conn: sqlite3.Connection, namespec: str, now: float) -> bool:
    """End every hold on the process; False when none was in force."""
    cur = conn.execute("UPDATE holds SET released_at = ?, released_by = 'lookout release' "
                       "WHERE namespec = ? AND released_at IS NULL", (now, namespec))
    return cur.rowcount > 0
