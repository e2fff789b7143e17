"""The listener's writer connection, and what happens when the file under it misbehaves.

- open(): a store that is not SQLite (or is damaged) is moved aside and a fresh one created;
  the caller announces it. Disk full, locked or unwritable raises StoreUnavailable: the caller
  waits and retries instead of crashing (supervisord buffers the events meanwhile).
- commit(): the rules' outcome in one transaction, any failure classified (StoreUnavailable).
- replaced(): the file was deleted or replaced under us (checked by inode). `generation`
  changes on every (re)open, so other threads' connections know to follow.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3

from ...config import HistorySettings
from ..rules.models import Hold, Outcome
from ..rules.sequence import StreamPosition
from .files import StoreCorrupt, StoreUnavailable, identity, move_aside, store_errors
from .schema import connect
from .state import StateStore

log = logging.getLogger("lookout.store")
HOLDS_POLL_INTERVAL = 0.25


class StoreKeeper:
    def __init__(self, path: str, history: HistorySettings | None = None) -> None:
        self.path, self.history = path, history
        self.generation = 0
        self.state: StateStore | None = None
        self._identity: tuple[int, int] | None = None
        self._holds_version: int | None = None  # data_version when the holds were last read
        self._holds_polled_at = 0.0

    def open(self, now: float) -> str:
        """(Re)open the store; returns a note for people when a corrupt store was replaced."""
        self.close()
        note = ""
        try:
            conn = connect(self.path, check=True)
        except StoreCorrupt as exc:
            aside = move_aside(self.path, now)
            log.error("store %s is not usable (%s): moved aside to %s; starting a fresh store", self.path, exc, aside)
            note = (f"lookout's store {self.path} was not a usable SQLite database ({exc}). It was moved aside to "
                    f"{aside} and a fresh store was created: restart counters and alert history start again now.")
            conn = connect(self.path, check=True)
        self.state = StateStore(conn, self.history)
        self._identity = identity(self.path)
        self._holds_version = None
        self.generation += 1
        return note

    def close(self, *, truncate_wal: bool = False) -> None:
        """truncate_wal: a clean shutdown leaves a WAL of 0 bytes (best effort: a reader may hold it)."""
        if self.state is not None:
            with contextlib.suppress(sqlite3.Error):
                if truncate_wal:
                    self.state.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self.state.conn.close()
            self.state = None

    def commit(self, outcome: Outcome, **kwargs: object) -> None:
        """StateStore.commit with every failure turned into StoreUnavailable / StoreCorrupt."""
        if self.state is None:
            raise StoreUnavailable("the store is not open")
        with store_errors():
            self.state.commit(outcome, **kwargs)  # type: ignore[arg-type]

    def changed_holds(self, now: float) -> list[Hold] | None:
        """The operator's active holds when another process (`lookout hold`) may have changed them
        since the last look (SQLite's data_version: a cheap poll), else None."""
        if self.state is None or now - self._holds_polled_at < HOLDS_POLL_INTERVAL:
            return None
        self._holds_polled_at = now
        try:
            version = self.state.data_version()
            if version == self._holds_version:
                return None
            holds = self.state.active_holds()
        except sqlite3.Error as exc:  # retried at the next poll
            log.warning("reading the operator's holds failed (%s); retried", exc)
            return None
        self._holds_version = version
        return holds

    def prune(self, now: float) -> None:
        """Old rows out (state.py: prune), at a periodic reconcile."""
        try:
            if self.state is not None:
                self.state.prune(now)
        except Exception as exc:  # pruning is housekeeping: it waits for the next tick
            log.warning("pruning the store failed (%s); retried at the next reconcile", exc)

    def replaced(self) -> bool:
        """True when the file at path is gone or is another file than the one we write."""
        return self._identity is not None and identity(self.path) != self._identity

    def rewrite(self, records: list, alerts: list, position: StreamPosition | None, stopping: bool,
                now: float, holds: list | None = None, orphans: list | None = None) -> None:
        """Fill a recreated (or swapped-in) store from what the listener holds in memory."""
        if self.state is None:
            raise StoreUnavailable("the store is not open")
        with store_errors():
            self.state.rewrite(records, alerts, position, stopping, now, holds or [], orphans or [])
