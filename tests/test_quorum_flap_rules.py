"""Issue 21, case 10, in the pure rules (rules/quorum.py, fake clock): quorum's `for` counts the
time a group is below its minimum, not an unbroken run of it. Members that run for a second
between crashes no longer restart it; only stable_after at or above the minimum does."""

from __future__ import annotations

import itertools

from lookout.config import parse_config
from lookout.listener.protocol.events import Delivery, ProcessStateEvent
from lookout.listener.rules.engine import AlertEngine
from lookout.listener.rules.models import BELOW_QUORUM, FIRING, QUORUM, RESOLVED, Outcome

SERIAL = itertools.count(1)
GROUP = {"match": "pool", "min_running": 3, "for": "20s", "stable_after": "60s"}
T0 = 100.0  # the boot's own spell (members STARTING one by one) is over by then
Event = tuple[float, str, str, str, "bool | None"]  # at, state, member, from state, expected


def ev(e: AlertEngine, t: float, state: str, name: str, before: str, expected: bool | None = None) -> Outcome:
    n = next(SERIAL)
    event = ProcessStateEvent(Delivery("s", n, "p", n, f"PROCESS_STATE_{state}"), state, "pool", name, before,
                              expected=expected, pid=100 + n if state == "RUNNING" else None)
    return e.on_event(event, t)


def engine(**group: object) -> AlertEngine:
    c = parse_config({"alerts": {"groups": [{**GROUP, **group}]}})
    e = AlertEngine(c.alerts)
    for i in range(4):
        ev(e, 0, "STARTING", f"pool_{i}", "STOPPED")
    for i in range(4):
        ev(e, 1, "RUNNING", f"pool_{i}", "STARTING")
    e.on_time(T0 - 1)
    assert e.quorum.spells == {}
    return e


def said(out: Outcome) -> list[tuple[str, str]]:
    return [(n.kind, out.alerts[n.key].kind) for n in out.notices if n.key[0] == QUORUM]


def crash(t: float, name: str, down: float) -> list[Event]:
    """Exits unexpectedly at t, supervisord respawns it at once, RUNNING `down` later (startsecs)."""
    return [(t, "EXITED", name, "RUNNING", False), (t, "STARTING", name, "EXITED", None),
            (t + down, "RUNNING", name, "STARTING", None)]


def flapping(t0: float, until: float, names: tuple[str, ...], down: float, up: float) -> list[Event]:
    events: list[Event] = []
    t = t0
    while t < until:
        for name in names:
            events += crash(t, name, down)
        t += down + up
    return events


class Loop:
    """The listener's loop over the engine: events in time order, on_time after each and at every
    deadline the engine names in between; every quorum notice with its time."""

    def __init__(self, e: AlertEngine) -> None:
        self.e, self.now = e, T0
        self.notices: list[tuple[float, str, str]] = []

    def _note(self, out: Outcome, t: float) -> None:
        self.notices += [(t, *n) for n in said(out)]

    def _wake_until(self, t: float) -> None:
        while (due := self.e.next_deadline()) is not None and self.now <= due <= t:
            self.now = due
            self._note(self.e.on_time(due), due)
            if self.e.next_deadline() == due:
                break

    def run(self, events: list[Event], until: float) -> None:
        for at, state, name, before, expected in sorted(events, key=lambda x: x[0]):
            self._wake_until(at)
            self.now = at
            self._note(ev(self.e, at, state, name, before, expected), at)
            self._note(self.e.on_time(at), at)
        self._wake_until(until)
        self.now = until

    def kinds(self) -> list[str]:
        return [kind for _, kind, _ in self.notices]


def test_members_flapping_in_step_fire_once_after_for_in_all_and_are_named():
    loop = Loop(engine())
    # pool_1 and pool_2: STARTING 1.5 s (2 of 4 running), RUNNING 0.5 s (4 of 4), again and again.
    events = flapping(T0, T0 + 50, ("pool_1", "pool_2"), down=1.5, up=0.5)
    loop.run(events, T0 + 52)
    fired = [n for n in loop.notices if n[1] == FIRING]
    assert len(fired) == 1 and fired[0][2] == BELOW_QUORUM, loop.notices
    # 20 s short while short 75 % of the time: after 26.5 s (the 14th stretch, 0.5 s into it)
    assert fired[0][0] == T0 + 26.5, fired
    detail = loop.e.alerts[(QUORUM, "pool")].detail
    assert "flapping: pool_1 down " in detail and ", pool_2 down " in detail, detail
    assert "short for " in detail and "pool_0" not in detail and "pool_3" not in detail
    assert loop.e.alerts[(QUORUM, "pool")].opened_at == T0  # the spell's first drop
    assert RESOLVED not in loop.kinds()  # each brief RUNNING is no recovery
    last_up = max(at for at, state, *_ in events if state == "RUNNING")
    assert loop.e.next_deadline() == last_up + 60  # stable_after at or above the minimum resolves it
    loop.run([], last_up + 59.9)
    assert RESOLVED not in loop.kinds()
    loop.run([], last_up + 61)
    assert loop.notices[-1] == (last_up + 60, RESOLVED, BELOW_QUORUM)
    closed = loop.e.book.recently_closed[(QUORUM, "pool")]
    assert closed.resolution == "is back to 4 of 4 running (minimum 3) for 1m"


def test_no_stretch_reaches_for_their_sum_does():
    """Short 1 s of every 2 s: Prometheus' `for` (and lookout's before) never fires."""
    loop = Loop(engine())
    loop.run(flapping(T0, T0 + 60, ("pool_1", "pool_2"), down=1.0, up=1.0), T0 + 62)
    assert [(t - T0, kind) for t, kind, _ in loop.notices] == [(39.0, FIRING)]


def test_dips_far_apart_do_not_add_up_across_stable_spells():
    """A rolling restart of a pool that needs all four: 2 s dips 70 s apart (more than
    stable_after) never add up to `for`."""
    loop = Loop(engine(min_running=4))
    events = [x for k in range(20) for x in crash(T0 + 70 * k, f"pool_{k % 4}", down=2.0)]
    loop.run(events, T0 + 70 * 20)
    assert loop.notices == [] and loop.e.quorum.spells == {}


def test_dips_closer_than_stable_after_add_up():
    """The same 2 s dips 30 s apart: the group never stays up for stable_after; the tenth dip
    makes 20 s short in all: one alert, resolved stable_after after the last dip."""
    loop = Loop(engine(min_running=4))
    events = [x for k in range(12) for x in crash(T0 + 30 * k, f"pool_{k % 4}", down=2.0)]
    loop.run(events, T0 + 30 * 11 + 2 + 61)
    assert [(t - T0, kind) for t, kind, _ in loop.notices] == [(30 * 9 + 2, FIRING), (30 * 11 + 2 + 60, RESOLVED)]


def test_back_after_one_drop_is_resolved_at_once_and_drops_soon_after_fire_again():
    loop = Loop(engine())
    loop.run([(T0, "STOPPING", "pool_3", "RUNNING", None), (T0, "STOPPED", "pool_3", "STOPPING", None),
              (T0 + 5, "EXITED", "pool_1", "RUNNING", False), (T0 + 5, "STARTING", "pool_1", "EXITED", None),
              (T0 + 5.5, "BACKOFF", "pool_1", "STARTING", None), (T0 + 6, "FATAL", "pool_1", "BACKOFF", None)],
             T0 + 40)
    assert [(t - T0, kind) for t, kind, _ in loop.notices] == [(25, FIRING)]  # 2 of 3 (one stopped on purpose)
    loop.run([(T0 + 40, "STARTING", "pool_1", "FATAL", None), (T0 + 41, "RUNNING", "pool_1", "STARTING", None)],
             T0 + 45)
    assert loop.notices[-1] == (T0 + 41, RESOLVED, BELOW_QUORUM)  # back after one drop: at once, as before
    # It dies again soon after (the spell goes on: 20 s short already): an alert at once; back, it
    # is resolved at once again (its first drop since the operator started it) ...
    loop.run(crash(T0 + 46, "pool_1", down=30), T0 + 78)
    # ... but a second drop makes it a flapping member: resolved only after stable_after.
    loop.run(crash(T0 + 80, "pool_1", down=1), T0 + 81 + 61)
    assert [(t - T0, kind) for t, kind, _ in loop.notices][1:] == [
        (41, RESOLVED), (46, FIRING), (76, RESOLVED), (80, FIRING), (141, RESOLVED)]
    assert "flapping: pool_1 down 2 times" in loop.e.book.recently_closed[(QUORUM, "pool")].detail


def test_an_operators_start_forgives_a_members_earlier_flaps():
    """A member that went down twice before supervisord gave up on it (FATAL), then started by an
    operator: back is back, resolved at once (tests/test_brake.py on a busy machine, where the
    member seemed to start before it exited)."""
    loop = Loop(engine())
    loop.run(crash(T0, "pool_2", down=99)[:2] + [(T0 + 1, "FATAL", "pool_2", "STARTING", None)]
             + crash(T0 + 2, "pool_1", down=1) + crash(T0 + 3.2, "pool_1", down=99)[:2]
             + [(T0 + 3.5, "BACKOFF", "pool_1", "STARTING", None), (T0 + 4, "FATAL", "pool_1", "BACKOFF", None)],
             T0 + 30)
    assert [(round(t - T0, 3), kind) for t, kind, _ in loop.notices] == [(22.2, FIRING)]  # short from 2, but 3 to 3.2
    assert "flapping: pool_1 down 2 times" in loop.e.alerts[(QUORUM, "pool")].detail
    loop.run([(T0 + 40, "STARTING", "pool_1", "FATAL", None), (T0 + 41, "RUNNING", "pool_1", "STARTING", None)],
             T0 + 45)
    assert loop.notices[-1] == (T0 + 41, RESOLVED, BELOW_QUORUM)
    assert loop.e.book.recently_closed[(QUORUM, "pool")].resolution == "is back to 3 of 4 running (minimum 3)"


def test_a_drop_right_after_the_boot_is_no_flapping():
    """Members STARTING at the boot never ran: a crash soon after is each member's first drop, and
    an operator's fix resolves the alert at once (the boot's short stretch still counts in `for`).
    Also when the listener saw them RUNNING first (its reconcile) and the boot's queued events
    after."""
    c = parse_config({"alerts": {"groups": [GROUP]}})
    e = AlertEngine(c.alerts)
    loop = Loop(e)
    loop.now = 0.0
    boot = [(0.0, "RUNNING", f"pool_{i}", "STARTING", None) for i in range(4)]  # as a reconcile sees them
    boot += [(0.0, "STARTING", f"pool_{i}", "STOPPED", None) for i in range(4)]  # the boot's events, queued
    boot += [(1.0, "RUNNING", f"pool_{i}", "STARTING", None) for i in range(4)]
    dead = [x for name in ("pool_1", "pool_2") for x in crash(3.0, name, down=0)[:2]]
    dead += [(3.5, "BACKOFF", name, "STARTING", None) for name in ("pool_1", "pool_2")]
    dead += [(4.0, "FATAL", name, "BACKOFF", None) for name in ("pool_1", "pool_2")]
    loop.run(boot + dead, 40)
    assert [(t, kind) for t, kind, _ in loop.notices] == [(22.0, FIRING)]  # 1 s at the boot + 19 s from 3
    assert "flapping" not in e.alerts[(QUORUM, "pool")].detail
    loop.run([(45, "STARTING", "pool_1", "FATAL", None), (46, "RUNNING", "pool_1", "STARTING", None)], 50)
    assert loop.notices[-1] == (46, RESOLVED, BELOW_QUORUM)
    assert e.book.recently_closed[(QUORUM, "pool")].resolution == "is back to 3 of 4 running (minimum 3)"


def test_an_open_alert_from_the_store_is_resolved_after_stable_after():
    """A restarted listener does not know whether the group flapped: it waits for stable_after."""
    e = engine()
    down = [x for name in ("pool_1", "pool_2") for x in crash(T0, name, down=60) if x[1] != "RUNNING"]
    Loop(e).run(down, T0 + 30)  # both STARTING for 30 s
    assert e.alerts[(QUORUM, "pool")].is_open
    again = AlertEngine(e.settings, e.records.values(), e.alerts.values())
    assert again.quorum.spells == {}
    assert said(ev(again, T0 + 40, "RUNNING", "pool_2", "STARTING")) == []  # not resolved at once
    assert said(again.on_time(T0 + 40 + 59)) == []
    assert said(again.on_time(T0 + 40 + 60)) == [(RESOLVED, BELOW_QUORUM)]


def test_stable_after_defaults_to_the_alerts_one_and_has_bounds():
    c = parse_config({"alerts": {"stable_after": "45s", "groups": [{"match": "pool", "min_running": 1}]}})
    assert c.alerts.groups[0].stable_after == 45
    c = parse_config({"alerts": {"groups": [{"match": "pool", "min_running": 1, "stable_after": "2m"}]}})
    assert c.alerts.groups[0].stable_after == 120
