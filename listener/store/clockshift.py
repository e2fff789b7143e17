"""The store's side of a wall-clock step (lookout/clock.py): the rows the rules do not hold in
memory move by the same delta, in the same transaction as the records, alerts and probe states
the engine shifted (rules/timeshift.py). History is what happened when it happened: it stays.

Who writes a row moves it: the loop its own rows (below) when it sees a step, the notifier its
outbox when it syncs its frame (reframe_outbox). The meta keeps the frame each side's rows are in
(clock_offset, outbox_clock_offset), so a listener that starts after the wall clock stepped while
none ran (or died between a step and the notifier's shift) moves them on the same boot.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ...clock import META_BOOT, STEP, quantize
from .schema import get_meta, set_meta

# table, its time columns, the rows that move (:before is the step's moment on the old clock)
LOOP_ROWS = (
    ("notifications", ("created_at",), "dispatched_at IS NULL"),  # group_wait runs from created_at
    ("silences", ("starts_at", "ends_at", "created_at"), "ends_at > :before"),  # `--for 30m` is a duration
    ("holds", ("created_at",), "released_at IS NULL"),
    ("stream", ("last_event_at",), "1"),
    ("orphans", ("started", "left_at", "found_at", "gone_at"), "1"),  # `started` with the pid is its identity
)
OUTBOX_ROWS = (  # the notifier's: backoff, retry_for, a send out, a target that hangs
    ("outbox", ("created_at", "next_attempt_at", "sending_since"), "status = 'pending'"),
    ("targets", ("hanging_since", "updated_at"), "1"),
)
META_TIMES = ("last_tick_at", "last_reconcile_at", "listener_started_at", "supervisord_started",
              "supervisord_gone_at")
META_OUTBOX_OFFSET = "outbox_clock_offset"


@dataclass(frozen=True)
class ClockStep:
    """A step to commit: the loop's rows move by delta; at: when it was seen, on the new clock."""

    delta: float
    at: float


def shift_loop_rows(c: sqlite3.Connection, step: ClockStep) -> None:
    before = step.at - step.delta
    for table, columns, where in LOOP_ROWS:
        _shift(c, table, columns, where, step.delta, before)
    moved = {}
    for key in META_TIMES:
        try:
            value = float(get_meta(c, key) or 0.0)
        except ValueError:
            continue
        if value:
            moved[key] = repr(value + step.delta)
    if moved:
        set_meta(c, moved)


def reframe_outbox(c: sqlite3.Connection, offset: float, boot: str | None) -> float:
    """Bring the pending outbox rows into the frame `offset` (wall minus monotonic) from the one
    the meta says they are in, on the same boot (None: the caller knows it is); returns the delta
    they moved by. Idempotent: the loop at start and the notifier at a step may both call it."""
    stored = get_meta(c, META_OUTBOX_OFFSET)
    delta = 0.0
    if stored and (boot is None or get_meta(c, META_BOOT) == boot):
        try:
            delta = offset - float(stored)
        except ValueError:
            delta = 0.0
        delta = quantize(delta) if abs(delta) > STEP else 0.0
    if delta:
        for table, columns, where in OUTBOX_ROWS:
            _shift(c, table, columns, where, delta, 0.0)
    if delta or stored != repr(offset):
        set_meta(c, {META_OUTBOX_OFFSET: repr(offset)})
    return delta


def _shift(c: sqlite3.Connection, table: str, columns: tuple[str, ...], where: str, delta: float,
           before: float) -> None:
    sets = ", ".join(f"{col} = CASE WHEN {col} IS NULL OR {col} = 0 THEN {col} ELSE {col} + :delta END"
                     for col in columns)
    c.execute(f"UPDATE {table} SET {sets} WHERE {where}", {"delta": delta, "before": before})
