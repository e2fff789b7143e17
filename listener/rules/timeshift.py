"""Every absolute time the rules hold, in one place: what a step of the wall clock moves. Pure.

The rules keep times on the loop's clock (lookout/clock.py: wall time advanced by monotonic
time). When the wall clock steps (NTP, a VM restored) the loop's clock follows it, and every time
listed here moves by the same delta: a deadline keeps its distance from now (the brake's start,
a backoff, a grace, a reminder, quorum's `for`), a duration its length, and a time shown reads
right on the new wall clock. The store's copies move in the same commit (store/clockshift.py).

A new field that holds a time goes into TIMES (or TIME_LISTS); a float that is not one of our
times goes into NOT_TIMES with the reason: tests/test_clock.py fails for a float field that is in
neither. A time of 0.0 or None means "never" and stays so.
"""

from __future__ import annotations

from dataclasses import replace

from .models import Alert, Hold, Outcome, PendingAction, ProbeState, ProcessRecord
from .own_events import shift_expected
from .quorum import ShortSpell

TIMES: dict[type, tuple[str, ...]] = {
    ProcessRecord: ("state_since", "last_start", "running_since", "last_exit_at", "failing_since", "pending_exit_at",
                    "event_at", "remediation_next_at", "operator_at", "brake_resume_at", "down_since",
                    "waiting_since"),
    Alert: ("opened_at", "updated_at", "last_notice_at", "resolved_at", "acting_since", "back_at", "gather_until"),
    ProbeState: ("first_failure_at", "last_at"),
    PendingAction: ("since",),
    Hold: ("created_at",),
    ShortSpell: ("started_at", "short_since", "above_since"),
}
TIME_LISTS: dict[type, tuple[str, ...]] = {ProcessRecord: ("failures", "lookout_restarts")}
NOT_TIMES: dict[type, dict[str, str]] = {
    ProcessRecord: {"own_stop_mark": "supervisord's own `start` of a run, compared with supervisord's own",
                    "last_run_seconds": "a duration", "brake_delay": "a duration"},
    ProbeState: {"last_duration": "a duration"},
    ShortSpell: {"short_before": "a duration"},
}


def moved(t: float | None, delta: float) -> float | None:
    return t + delta if t else t  # (0.0 and None: never)


def shift_fields(obj: object, delta: float) -> None:
    """Move the times of one record, alert, probe state or action (in place)."""
    for name in TIMES[type(obj)]:
        setattr(obj, name, moved(getattr(obj, name), delta))
    for name in TIME_LISTS.get(type(obj), ()):
        setattr(obj, name, [t + delta for t in getattr(obj, name)])


def shift_engine(engine, delta: float) -> Outcome:  # noqa: ANN001 - AlertEngine (it calls this)
    """Move every time the engine and its parts hold; returns what the store must write again."""
    out = Outcome()
    for rec in engine.records.values():
        shift_fields(rec, delta)
        if rec.action is not None:
            shift_fields(rec.action, delta)
        shift_expected(rec, delta)
        out.records[rec.namespec] = rec
    book = engine.book
    for alert in {id(a): a for a in [*book.alerts.values(), *book.recently_closed.values()]}.values():
        shift_fields(alert, delta)
        out.alerts[alert.key] = alert
    for states in engine.health.states.values():
        for st in states.values():
            shift_fields(st, delta)
            out.probe_states[st.key] = st
    health = engine.health
    health._confirming = {k: (n, first + delta) for k, (n, first) in health._confirming.items()}
    for spell in engine.quorum.spells.values():
        shift_fields(spell, delta)
        spell.downs = {m: (n, moved(at, delta)) for m, (n, at) in spell.downs.items()}  # (copies of operator_at)
    holds = engine.holds
    holds.holds = {ns: replace(h, created_at=moved(h.created_at, delta)) for ns, h in holds.holds.items()}
    engine.stopping_since = moved(engine.stopping_since, delta)
    deps = engine.deps
    deps.gone_at = {ns: t + delta for ns, t in deps.gone_at.items()}
    deps.needs_fine_at = {ns: t + delta for ns, t in deps.needs_fine_at.items()}
    pending = engine.process.pending
    pending.stable_not_before = {ns: t + delta for ns, t in pending.stable_not_before.items()}
    pending.unheard_since = {ns: t + delta for ns, t in pending.unheard_since.items()}
    pending.exits_awaited = {ns: [(pid, t + delta, ran) for pid, t, ran in waits]
                             for ns, waits in pending.exits_awaited.items()}
    return out
