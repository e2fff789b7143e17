"""The SQLite file shared by the listener (writer) and the exporter and CLI (readers).

WAL mode: readers never block the listener's per-event commit, and synchronous=NORMAL keeps
that commit in the tens of microseconds (durable against a process crash; a power loss may
lose the last commits, which the reconcile at start repairs).

Tables (the contract the exporter reads; bump SCHEMA_VERSION on change):
  stream(run, pool, poolserial, serial, last_event_at)
                                   one row, updated with every event: where the listener is in
                                   supervisord's stream (the redelivery key) and its heartbeat
  meta(key, value)                 last_tick_at, last_reconcile_at, stopping, listener_pid,
                                   supervisord_pid, supervisord_version, supervisord_identification;
                                   clock_offset, clock_boot, outbox_clock_offset: the frame the
                                   stored times are in (lookout/clock.py)
  processes(namespec, ...)         one row per process: state, state_since, pid, restarts,
                                   unexpected_exits, fatals, last_start, running_since,
                                   last_exit_at, last_exit_status, last_exit_text,
                                   last_run_seconds, failures (JSON list of times),
                                   failing_since, crash_looping, present, and remediation:
                                   lookout_restarts (JSON list of times), remediation_exhausted,
                                   braked, brake_delay, brake_resume_at, stopped_by (operator,
                                   lookout), action (JSON: lookout's action in flight, step by
                                   step), event_pid (the pid events last named: a reconcile may
                                   know a newer one while events are still queued),
                                   own_event_due (JSON: lookout's own events still to come;
                                   before schema 6 a ";"-separated text, read as such),
                                   actions_begun (numbers lookout's actions on it: their ids),
                                   down_since (schema 7: a must_run program down since),
                                   needs_wait, waiting_since (schema 8: lookout starts it once
                                   its needs are ready: start-up or recovery), last_exit_expected
                                   (schema 8: its EXITED event's word, by exitcodes), ...
  alerts(id, namespec, family, kind, ...)
                                   open alerts (resolved_at NULL) and recently closed ones;
                                   family: process, health:<probe>, remediation, quorum (for
                                   quorum, namespec is the group name); acting_since (schema 7:
                                   lookout's action on it in flight, its page waits), back_at
                                   (schema 7: when the run that resolved it began), at_least
                                   (schema 7: found by a reconcile, it may have begun earlier);
                                   cause, impact, gather_until (schema 8: dependencies: the
                                   failing need it folds into; on a cause, its dependants; its
                                   first page waits until then)
  probes(namespec, probe, ...)     the rules' view of each probe on each process: healthy (NULL:
                                   not judged since the start), consecutive counts, last result,
                                   failures_total, last_judged (0: its last run could not read
                                   its evidence, last_detail says why)
  remediation_stats(namespec, action, result, count)
                                   counters for lookout_remediations_total
  history(id, at, namespec, kind, detail, restart, exit_status, exit_text)
                                   what happened to each process, for `lookout history`: kind is
                                   state (every state change), exit (with its status), alert,
                                   resolved, action (lookout's own), notify (a notice queued in
                                   the outbox for the targets), hold; restart: whose restart a row
                                   is (supervisord, lookout), exit_status and exit_text: an exit's
                                   (the commands count these, never the wording of detail).
                                   Bounded: rows older than state.history_max_age,
                                   beyond state.history_per_process for one process, or beyond
                                   state.history_max_rows in all are pruned, oldest first
  notifications(id, alert_id, kind, created_at, dispatched_at, held)
                                   what people must hear; pending until grouped into outbox
                                   (dispatched_at is also set for notices dropped on purpose)
  outbox(id, target_key, ..., copies, sending_since, alert_ids, system, everything, repost)
                                   one row per message per target; status pending -> sent,
                                   or expired after notify.retry_for, or maybe (given up after
                                   3 copies that were sent and not answered in time: "maybe
                                   delivered"), or dropped (its target removed, or a re-post
                                   superseded by a newer one); what the message is about,
                                   which orders a target's messages: alert_ids (JSON), system
                                   (lookout's own news), everything (orders with all; the default,
                                   for a row an older listener writes), repost
                                   (Alertmanager's re-post); about: before schema 6, all of that
                                   in one text, read into those columns once; copies: sends its
                                   target's host took in full without answering in time;
                                   sending_since: a send is out
  targets(target_key, target_label, scheme, hanging_since, last_error, updated_at)
                                   one row per configured target: hanging_since is set while its
                                   sends get no answer within notify.timeout (it counts as
                                   failing: status, /metrics, the dead man's switch)
  notification_stats(scheme, result, count)
                                   counters for lookout_notifications_total
  silences(id, matcher, starts_at, ends_at, reason, created_at)
  orphans(namespec, pid, started, supervisord_pid, left_at, death_seen, found_at, gone_at)
                                   processes a supervisord that died left running, by pid and
                                   start time, with the supervisord that left them (which
                                   generation) until lookout sees them gone (gone_at; pruned a
                                   week later): they outlive listener restarts, reloads and
                                   further deaths
  holds(id, namespec, created_at, reason, seen_at, released_at, released_by)
                                   `lookout hold NAME`: lookout neither starts, stops nor
                                   restarts NAME until released (`lookout release`, or an
                                   operator's start); written by `lookout`, seen_at and
                                   released_at by the listener
All times are unix epoch seconds (REAL). Schema changes only add tables and columns (with
defaults): an older store is migrated in place when the listener opens it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3

from .files import StoreCorrupt, prepare, private_umask, store_errors, uri

SCHEMA_VERSION = 8

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS stream (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    run TEXT NOT NULL,
    pool TEXT NOT NULL,
    poolserial INTEGER NOT NULL,
    serial INTEGER NOT NULL,
    last_event_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS processes (
    namespec TEXT PRIMARY KEY,
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    state_since REAL NOT NULL,
    pid INTEGER,
    restarts INTEGER NOT NULL DEFAULT 0,
    unexpected_exits INTEGER NOT NULL DEFAULT 0,
    fatals INTEGER NOT NULL DEFAULT 0,
    last_start REAL,
    running_since REAL,
    last_exit_at REAL,
    last_exit_status INTEGER,
    last_exit_text TEXT NOT NULL DEFAULT '',
    last_run_seconds REAL,
    failures TEXT NOT NULL DEFAULT '[]',
    failing_since REAL,
    restarts_before_failing INTEGER NOT NULL DEFAULT 0,
    crash_looping INTEGER NOT NULL DEFAULT 0,
    pending_exit_at REAL,
    spawnerr TEXT NOT NULL DEFAULT '',
    present INTEGER NOT NULL DEFAULT 1,
    event_at REAL NOT NULL DEFAULT 0,
    event_pid INTEGER,
    lookout_restarts TEXT NOT NULL DEFAULT '[]',
    remediation_exhausted INTEGER NOT NULL DEFAULT 0,
    remediation_next_at REAL,
    remediation_wanted TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL DEFAULT '',
    own_event_due TEXT NOT NULL DEFAULT '',
    operator_at REAL NOT NULL DEFAULT 0,
    own_stop_mark REAL NOT NULL DEFAULT 0,
    stopped_by TEXT NOT NULL DEFAULT '',
    braked INTEGER NOT NULL DEFAULT 0,
    brake_delay REAL NOT NULL DEFAULT 0,
    brake_resume_at REAL,
    actions_begun INTEGER NOT NULL DEFAULT 0,
    down_since REAL,
    needs_wait TEXT NOT NULL DEFAULT '',
    waiting_since REAL,
    last_exit_expected INTEGER
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespec TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    opened_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    restarts_at_open INTEGER NOT NULL DEFAULT 0,
    tags TEXT NOT NULL DEFAULT '[]',
    detail TEXT NOT NULL DEFAULT '',
    previous_kind TEXT NOT NULL DEFAULT '',
    previous_severity TEXT NOT NULL DEFAULT '',
    last_notice_at REAL,
    resolved_at REAL,
    resolution TEXT NOT NULL DEFAULT '',
    family TEXT NOT NULL DEFAULT 'process',
    action_taken TEXT NOT NULL DEFAULT '',
    evidence TEXT NOT NULL DEFAULT '',
    acting_since REAL,
    back_at REAL,
    at_least INTEGER NOT NULL DEFAULT 0,
    cause TEXT NOT NULL DEFAULT '',
    impact TEXT NOT NULL DEFAULT '',
    gather_until REAL
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (resolved_at);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id INTEGER NOT NULL REFERENCES alerts(id),
    kind TEXT NOT NULL,
    created_at REAL NOT NULL,
    dispatched_at REAL,
    held INTEGER NOT NULL DEFAULT 0  -- a silence held it back at least once
);
CREATE INDEX IF NOT EXISTS notifications_pending ON notifications (dispatched_at, alert_id);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target_key TEXT NOT NULL,
    target_label TEXT NOT NULL,
    scheme TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    notify_type TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT NOT NULL DEFAULT '',
    sent_at REAL,
    about TEXT NOT NULL DEFAULT '',
    copies INTEGER NOT NULL DEFAULT 0,
    sending_since REAL,
    alert_ids TEXT NOT NULL DEFAULT '[]',
    system INTEGER NOT NULL DEFAULT 0,
    everything INTEGER NOT NULL DEFAULT 1,
    repost INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at);
CREATE TABLE IF NOT EXISTS targets (
    target_key TEXT PRIMARY KEY,
    target_label TEXT NOT NULL,
    scheme TEXT NOT NULL,
    hanging_since REAL,
    last_error TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS notification_stats (
    scheme TEXT NOT NULL,
    result TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scheme, result)
);
CREATE TABLE IF NOT EXISTS probes (
    namespec TEXT NOT NULL,
    probe TEXT NOT NULL,
    healthy INTEGER,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    consecutive_successes INTEGER NOT NULL DEFAULT 0,
    first_failure_at REAL,
    last_ok INTEGER,
    last_detail TEXT NOT NULL DEFAULT '',
    last_duration REAL NOT NULL DEFAULT 0,
    last_at REAL NOT NULL DEFAULT 0,
    failures_total INTEGER NOT NULL DEFAULT 0,
    last_judged INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (namespec, probe)
);
CREATE TABLE IF NOT EXISTS remediation_stats (
    namespec TEXT NOT NULL,
    action TEXT NOT NULL,
    result TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespec, action, result)
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    namespec TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    restart TEXT NOT NULL DEFAULT '',
    exit_status INTEGER,
    exit_text TEXT NOT NULL DEFAULT ''
);
-- No index on namespec: one more B-tree to update on every event cost the listener about 5%
-- of its throughput; `lookout history` and pruning scan at most history_max_rows rows.
CREATE TABLE IF NOT EXISTS holds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespec TEXT NOT NULL,
    created_at REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    seen_at REAL,
    released_at REAL,
    released_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS orphans (
    namespec TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    supervisord_pid INTEGER NOT NULL DEFAULT 0,
    left_at REAL NOT NULL DEFAULT 0,
    death_seen INTEGER NOT NULL DEFAULT 1,
    found_at REAL NOT NULL DEFAULT 0,
    gone_at REAL,
    PRIMARY KEY (pid, started)
);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    matcher TEXT NOT NULL,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
"""


WRITER_BUSY_TIMEOUT = 2.0  # then the listener holds its event and retries (degraded mode), not crash
READER_BUSY_TIMEOUT = 5.0


def connect(path: str, *, readonly: bool = False, check: bool = False,
            busy_timeout: float = WRITER_BUSY_TIMEOUT) -> sqlite3.Connection:
    """Open (and for writers create, privately) the store. One connection per thread.

    Raises StoreUnavailable (disk full, locked, unwritable) or StoreCorrupt (check=True runs
    PRAGMA quick_check, which a damaged file fails even where a first query would not).
    """
    with store_errors():
        if readonly:
            conn = sqlite3.connect(uri(path, "ro"), uri=True, timeout=READER_BUSY_TIMEOUT,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            return conn
        creating = prepare(path)
        with private_umask(creating):
            conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
            try:
                if check:
                    row = conn.execute("PRAGMA quick_check").fetchone()
                    if not row or row[0] != "ok":
                        raise StoreCorrupt(f"not a usable SQLite database (quick_check: {row[0] if row else '?'})")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                # The WAL stays bounded: a checkpoint every 800 pages (about 3 MB), and a WAL that grew
                # past 3 MB (a reader held it) is cut back when it is next reused.
                conn.execute("PRAGMA wal_autocheckpoint=800")
                conn.execute(f"PRAGMA journal_size_limit={3 * 1024 * 1024}")
                conn.executescript(SCHEMA)
                migrate(conn)
            except BaseException:
                conn.close()
                raise
    conn.row_factory = sqlite3.Row
    return conn


MIGRATED_TABLES = ("processes", "alerts", "outbox", "probes", "history")


def migrate(conn: sqlite3.Connection) -> None:
    """Bring an older store to this schema in place, in one transaction (a kill or a full disk in
    the middle leaves the older store as it was, migrated again at the next open): the columns a
    newer schema has, with their defaults; what rows before schema 6 said only in text, read into
    its columns; the version. Nothing is written when nothing changes (a full disk must not keep
    the listener from opening its store)."""
    missing = {}
    for table in MIGRATED_TABLES:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        missing[table] = [(c, d) for c, d in _declared_columns(table).items() if c not in have]
    version = get_meta(conn, "schema_version")
    if version == str(SCHEMA_VERSION) and not any(missing.values()):
        return
    with Transaction(conn) as c:
        for table, columns in missing.items():
            for column, declaration in columns:
                c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        if version is None or not version.isdigit() or int(version) < 6:
            _history_facts_from_wording(c)
            _outbox_about_from_text(c)
        c.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                  "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))


def legacy_about(text: str) -> tuple[list[int], bool, bool, bool]:
    """An outbox row's `about` before schema 6 ("a12 a13", "system", "repost a12", "*" for an alert
    not yet stored, "" before schema 5: everything) as (alert ids, system, everything, repost)."""
    words = text.split()
    ids = [int(w[1:]) for w in words if w[:1] == "a" and w[1:].isdigit()]
    return ids, "system" in words, not words or "*" in words, "repost" in words


def _outbox_about_from_text(conn: sqlite3.Connection) -> None:
    """Before schema 6 what a message is about was one text: read into its columns."""
    rows = conn.execute("SELECT id, about FROM outbox").fetchall()
    for row_id, about in rows:
        ids, system, everything, repost = legacy_about(about)
        conn.execute("UPDATE outbox SET alert_ids = ?, system = ?, everything = ?, repost = ? WHERE id = ?",
                     (json.dumps(ids), system, everything, repost, row_id))


def _history_facts_from_wording(conn: sqlite3.Connection) -> None:
    """Schema 6 keeps a restart and an exit's status in columns; an older store's rows said them
    only in their wording, read here (an exit's text as a new row keeps it: without its run time)."""
    conn.execute("UPDATE history SET restart = 'supervisord' WHERE kind = 'state' AND "
                 "(detail LIKE 'STARTING (from EXITED%' OR detail LIKE 'STARTING (from BACKOFF%')")
    conn.execute("UPDATE history SET restart = 'lookout' WHERE kind = 'action' AND detail LIKE 'restarted by lookout%'")
    cut = ("CASE WHEN instr(detail, ' after running ') > 0 "
           "THEN substr(detail, 1, instr(detail, ' after running ') - 1) ELSE detail END")
    conn.execute(f"UPDATE history SET exit_status = CAST(substr(detail, 13) AS INTEGER), exit_text = {cut} "
                 "WHERE kind = 'exit' AND detail GLOB 'exit status [0-9]*'")
    conn.execute(f"UPDATE history SET exit_status = -1, exit_text = {cut} "
                 "WHERE kind = 'exit' AND detail LIKE 'killed by %'")


def _declared_columns(table: str) -> dict[str, str]:
    body = SCHEMA.split(f"CREATE TABLE IF NOT EXISTS {table} (", 1)[1].split("\n);", 1)[0]
    columns = {}
    for line in body.strip().splitlines():
        line = line.strip().rstrip(",")
        name, _, declaration = line.partition(" ")
        if name.isidentifier() and name.upper() not in ("PRIMARY", "CHECK", "UNIQUE", "FOREIGN"):
            columns[name] = declaration.replace("PRIMARY KEY AUTOINCREMENT", "").replace("PRIMARY KEY", "")
    return columns


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except BaseException:
                self._rollback()  # a failed COMMIT (disk full) leaves the transaction open
                raise
        self._rollback()

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")


def get_meta(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else row[0]


def set_meta(conn: sqlite3.Connection, items: dict[str, object]) -> None:
    conn.executemany(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [(k, None if v is None else str(v)) for k, v in items.items()],
    )
