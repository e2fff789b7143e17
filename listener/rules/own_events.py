"""The events lookout's own calls still owe (a STOPPED after its stop, a STARTING after its start):
when one comes, it is lookout's, not an operator's. Kept on the record, in the order they will come."""

from __future__ import annotations

from dataclasses import replace

from .models import DueEvent, ProcessRecord

STALE_STOP = DueEvent("STOPPED", stale=True)  # may still be in transit from before supervisord's answer: nobody's
STALE_START = DueEvent("STARTING", stale=True)  # likewise (the previous listener's own start, or an operator's)


def expected(rec: ProcessRecord, due: list[DueEvent] | None = None) -> list[DueEvent]:
    """lookout's own STOPPED/STARTING events still due, in the order they will come (set them with due)."""
    if due is not None:
        rec.own_event_due = list(due)
    return rec.own_event_due


def expect(rec: ProcessRecord, due: DueEvent) -> None:
    expected(rec, [*expected(rec), due])


def shift_expected(rec: ProcessRecord, delta: float) -> None:
    """The wall clock stepped: the decision times move with it (timeshift.py)."""
    expected(rec, [d if d.stale else replace(d, since=d.since + delta) for d in expected(rec)])
