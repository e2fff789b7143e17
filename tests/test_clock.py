"""Issue 21 (case 5): the listener's clock and what moves when the wall clock steps, piece by piece.
The whole listener under a step, against a real supervisord: test_clock_step.py; the rules under
steps at any moment: test_guards_property.py (R7)."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from lookout.clock import LookoutClock, clock_meta, stepped_while_stopped
from lookout.config import AlertSettings, CrashLoop, ProgramRule
from lookout.config.load import parse_config
from lookout.listener.loop.clock_steps import commit_for_step, commit_for_stored_frame
from lookout.listener.loop.degraded import HeldCommit
from lookout.listener.notifier.text_target import TextTarget
from lookout.listener.notifier.worker import Notifier
from lookout.listener.probes.checks import file_age
from lookout.listener.protocol.events import Delivery, ProcessStateEvent
from lookout.listener.rules.engine import AlertEngine
from lookout.listener.rules.models import FIRING, Notice, Outcome, ProcessSnapshot
from lookout.listener.rules.timeshift import NOT_TIMES, TIME_LISTS, TIMES
from lookout.listener.store.clockshift import META_OUTBOX_OFFSET, ClockStep
from lookout.listener.store.delivery import SYSTEM_NEWS, DeliveryStore
from lookout.listener.store.schema import connect, get_meta
from lookout.listener.store.state import StateStore
from lookout.listener.workers.watcher import steady

EPOCH = 1_765_000_000.123456  # a wall time of today's size: shifts of it must be exact


class FakeClocks:
    def __init__(self, wall: float = EPOCH, mono: float = 5000.0) -> None:
        self.wall, self.mono = wall, mono

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_the_clock_follows_a_step_and_says_by_how_much():
    c = FakeClocks()
    clock = LookoutClock(wall=lambda: c.wall, mono=lambda: c.mono)
    assert clock() == pytest.approx(EPOCH)
    c.tick(10)
    c.wall += 0.4  # a slew, or the two reads a moment apart: not a step
    assert clock.step() == 0.0 and clock() == pytest.approx(EPOCH + 10)
    c.wall -= 3600.4  # NTP steps it back an hour
    assert clock() == pytest.approx(EPOCH + 10)  # until the loop looks, nothing moves
    assert clock.step() == -3600.0  # (the 0.4 s it let pass before is part of it)
    assert clock() == pytest.approx(c.wall, abs=1e-3) and clock.generation == 1
    c.tick(5)
    assert clock.step() == 0.0


def test_a_time_shifted_with_a_step_is_the_same_monotonic_moment():
    """A probe's schedule is computed from a start converted to monotonic time: after a shift the
    conversion must give the same float, or every probe would be rescheduled."""
    c = FakeClocks()
    clock = LookoutClock(wall=lambda: c.wall, mono=lambda: c.mono)
    started = clock() - 12.345678
    before = clock.to_mono(started)
    c.wall += 3600.123456789
    delta = clock.step()
    assert clock.to_mono(started + delta) == before


def test_a_view_moves_when_its_thread_syncs_to_what_the_loop_published():
    c = FakeClocks()
    clock = LookoutClock(wall=lambda: c.wall, mono=lambda: c.mono)
    view = clock.view()
    c.wall += 7200
    assert clock.step() == pytest.approx(7200)
    assert view.moved() and view() == pytest.approx(EPOCH)  # its pass stays in one frame
    assert view.sync() == 0.0 and view.moved()  # the loop's rows are not moved yet: it waits
    clock.publish()
    assert view.sync() == pytest.approx(7200) and not view.moved()
    assert view() == pytest.approx(clock())
    c.wall -= 60
    clock.step()
    c.wall -= 60
    clock.step()
    clock.publish()
    assert view.sync() == pytest.approx(-120) and view.sync() == 0.0
    assert clock.view()() == pytest.approx(clock())


def test_a_step_while_no_listener_ran_counts_on_the_same_boot_only():
    assert stepped_while_stopped(EPOCH - 3600, repr(EPOCH), "boot-a", "boot-a") == pytest.approx(-3600)
    assert stepped_while_stopped(EPOCH + 0.5, repr(EPOCH), "boot-a", "boot-a") == 0.0  # drift, not a step
    assert stepped_while_stopped(EPOCH - 3600, repr(EPOCH), "boot-a", "boot-b") == 0.0  # monotonic restarted
    assert stepped_while_stopped(EPOCH, None, None, "boot-a") == 0.0  # an older store: nothing known


def _holds_floats(tp: object) -> bool:
    return tp is float or float in typing.get_args(tp)  # float, float | None, list[float]


@pytest.mark.parametrize("cls", list(TIMES))
def test_every_float_the_rules_keep_is_a_time_or_says_why_not(cls):
    """A field added to a record, alert, probe state, action or hold that holds a time must be in
    rules/timeshift.py, or a wall-clock step leaves it behind: this names the one that is not."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _holds_floats(hints[f.name]):
            listed = (f.name in TIMES.get(cls, ()) or f.name in TIME_LISTS.get(cls, ())
                      or f.name in NOT_TIMES.get(cls, {}))
            assert listed, f"{cls.__name__}.{f.name} holds a float: list it in rules/timeshift.py"


def _event(state: str, name: str = "feed", from_state: str = "", group: str = "", **kw: object) -> ProcessStateEvent:
    _event.serial = getattr(_event, "serial", 0) + 1  # type: ignore[attr-defined]
    n = _event.serial  # type: ignore[attr-defined]
    return ProcessStateEvent(Delivery("s", n, "lookout", n, f"PROCESS_STATE_{state}"), state, group or name, name,
                             from_state, **kw)  # type: ignore[arg-type]


def _braked_engine(t: float) -> AlertEngine:
    loop = CrashLoop(2, 60, action="backoff", backoff=10.0, backoff_max=40.0)
    settings = AlertSettings(group_wait=0, repeat_interval=60, crash_loop=loop,
                             programs=(ProgramRule("feed", crash_loop=loop),))
    engine = AlertEngine(settings)
    for i, (state, frm) in enumerate([("STARTING", "STOPPED"), ("RUNNING", "STARTING"), ("BACKOFF", "STARTING"),
                                      ("STARTING", "BACKOFF"), ("BACKOFF", "STARTING")]):
        engine.on_event(_event(state, from_state=frm, pid=7 if state == "RUNNING" else None), t + i * 0.1)
    return engine


@pytest.mark.parametrize("step", [-3600.0, 7200.0])
def test_the_engine_moves_its_deadlines_with_a_step(step):
    t = EPOCH
    engine = _braked_engine(t)
    rec = engine.records["feed:feed"]
    assert rec.brake_resume_at == pytest.approx(t + 0.4 + 10)
    due, reminder = engine.next_deadline(), engine.book.next_reminder()
    out = engine.shift(step)
    assert "feed:feed" in out.records and out.alerts
    assert engine.next_deadline() == due + step and engine.book.next_reminder() == reminder + step
    assert rec.failures == [t + 0.2 + step, t + 0.4 + step]
    assert rec.action is not None and rec.action.since == t + 0.4 + step  # the brake's stop, still in flight


@pytest.mark.parametrize("step", [-3600.0, 7200.0])
def test_quorum_keeps_its_for_across_a_step(step):
    from lookout.config.probes import GroupRule

    engine = AlertEngine(AlertSettings(groups=(GroupRule("pool", 2, sustain=10.0),)))
    t = EPOCH
    for name in ("p0", "p1"):
        engine.on_event(_event("STARTING", name, "STOPPED", group="pool"), t)
        engine.on_event(_event("RUNNING", name, "STARTING", pid=10, group="pool"), t)
    engine.on_event(_event("EXITED", "p1", "RUNNING", expected=False, pid=10, group="pool"), t + 1)
    engine.on_event(_event("BACKOFF", "p1", "STARTING", group="pool"), t + 1.5)
    assert engine.quorum.next_deadline() == t + 11  # short since t + 1: the alert at t + 11
    engine.shift(step)
    assert engine.quorum.next_deadline() == t + 11 + step
    assert ("quorum", "pool") not in [n.key for n in engine.on_time(t + 10.5 + step).notices]
    assert ("quorum", "pool") in [n.key for n in engine.on_time(t + 11 + step).notices]


def test_a_step_is_committed_with_the_rows_the_engine_does_not_hold(tmp_path):
    path = str(tmp_path / "db")
    conn = connect(path)
    state = StateStore(conn)
    t = EPOCH
    engine = _braked_engine(t)
    state.commit(Outcome(records=dict(engine.records), alerts=dict(engine.book.alerts)), stopping=False,
                 meta={"last_tick_at": t, "supervisord_started": t - 100})
    alert_id = next(iter(engine.book.alerts.values())).id
    conn.executescript(f"""
        INSERT INTO notifications(alert_id, kind, created_at) VALUES ({alert_id}, 'firing', {t});
        INSERT INTO notifications(alert_id, kind, created_at, dispatched_at) VALUES ({alert_id}, 'firing', {t}, {t});
        INSERT INTO silences(matcher, starts_at, ends_at, created_at) VALUES ('feed', {t - 60}, {t + 1800}, {t - 60});
        INSERT INTO silences(matcher, starts_at, ends_at, created_at) VALUES ('old', {t - 900}, {t - 600}, {t - 900});
        INSERT INTO holds(namespec, created_at) VALUES ('feed:feed', {t - 5});
    """)
    commit = commit_for_step(engine, -3600.0, t + 1 - 3600.0, clock_meta(123.0, "boot"))
    state.commit(commit.outcome, stopping=False, **commit.kwargs)
    rows = lambda sql: [tuple(r) for r in conn.execute(sql)]  # noqa: E731
    assert rows("SELECT created_at FROM notifications ORDER BY id") == [(t - 3600,), (t,)]  # pending ones only
    assert rows("SELECT starts_at, ends_at FROM silences ORDER BY id") == [(t - 3660, t - 1800), (t - 900, t - 600)]
    assert rows("SELECT created_at FROM holds") == [(t - 3605,)]
    assert float(get_meta(conn, "last_tick_at")) == t - 3600 and get_meta(conn, "clock_offset") == "123.0"
    assert rows("SELECT brake_resume_at FROM processes") == [(t + 0.4 + 10 - 3600,)]


def test_the_outbox_follows_the_frame_once_and_on_the_same_boot_only(tmp_path):
    conn = connect(str(tmp_path / "db"))
    state, delivery = StateStore(conn), DeliveryStore(conn)
    msg = {"target_key": "k", "target_label": "k", "scheme": "json", "title": "t", "body": "b", "notify_type": "info"}
    delivery.dispatch([], [msg], EPOCH)
    state.commit(Outcome(), stopping=False, meta=clock_meta(1000.0, "boot-a"), outbox_frame=(1000.0, "boot-a"))
    assert get_meta(conn, META_OUTBOX_OFFSET) == "1000.0"
    assert delivery.reframe_outbox(1000.0 + 7200) == 7200  # the notifier, after a step forward
    assert delivery.reframe_outbox(1000.0 + 7200) == 0.0  # and again (the loop at start, say): nothing
    assert conn.execute("SELECT created_at, next_attempt_at FROM outbox").fetchone()[:] == (EPOCH + 7200,) * 2
    state.commit(Outcome(), stopping=False, outbox_frame=(5.0, "boot-b"))  # another boot: only the frame is named
    assert conn.execute("SELECT created_at FROM outbox").fetchone()[0] == EPOCH + 7200


def test_a_listener_started_after_a_step_moves_what_the_store_holds(tmp_path):
    conn = connect(str(tmp_path / "db"))
    state = StateStore(conn)
    engine = _braked_engine(EPOCH)
    state.commit(Outcome(records=dict(engine.records)), stopping=False, meta=clock_meta(1000.0, "boot"))
    c = FakeClocks(wall=1000.0 - 3600 + 5000.0, mono=5000.0)  # an hour back while none ran
    clock = LookoutClock(wall=lambda: c.wall, mono=lambda: c.mono)
    again = AlertEngine(engine.settings, state.load_records())
    commit = commit_for_stored_frame(clock, state, again, "boot")
    assert commit is not None
    state.commit(commit.outcome, stopping=False, **commit.kwargs)
    resume = state.load_records()[0].brake_resume_at
    assert resume == pytest.approx(EPOCH + 10.4 - 3600)
    assert commit_for_stored_frame(clock, state, AlertEngine(engine.settings, state.load_records()), "boot") is None


def test_a_held_commit_takes_a_step_with_it():
    held = HeldCommit(Outcome(), {"meta": {"last_tick_at": 1.0}})
    held.absorb(Outcome(), {"meta": {"clock_offset": "1"}, "shift": ClockStep(-60.0, 100.0)})
    held.absorb(Outcome(), {"meta": {"clock_offset": "2"}, "shift": ClockStep(-600.0, 90.0)})
    assert held.kwargs["shift"] == ClockStep(-660.0, 90.0)
    assert held.kwargs["meta"] == {"last_tick_at": 1.0, "clock_offset": "2"}


def test_a_file_is_aged_by_what_was_seen_between_looks(monkeypatch):
    mono = [100.0]
    monkeypatch.setattr("lookout.listener.probes.checks.time.monotonic", lambda: mono[0])
    memory: dict = {}
    assert file_age(EPOCH - 5, memory, "hb", EPOCH) == 5  # the first look: the wall clock is all there is
    mono[0] += 10  # not written since; the wall clock went back an hour meanwhile
    assert file_age(EPOCH - 5, memory, "hb", EPOCH + 10 - 3600) == 15
    mono[0] += 1  # written since (after the step: the new clock's time)
    assert file_age(EPOCH + 11 - 3600, memory, "hb", EPOCH + 11 - 3600) == 0
    mono[0] += 2  # written just before a step forward, seen after it
    assert file_age(EPOCH + 12 - 3600, memory, "hb", EPOCH + 13 + 3600) == 2


def test_supervisords_start_that_a_step_made_wrong_is_taken_from_the_age():
    info = ProcessSnapshot("w", "w", "RUNNING", 1000, 0, 1010 - 3600, 42, 0, "")  # started, then an hour back
    assert steady(info, 10.4, 1010.6 - 3600).start == 1000 - 3600
    assert steady(info, None, 0.0) is info  # /proc does not know it: as supervisord says
    near = ProcessSnapshot("w", "w", "RUNNING", 1000, 0, 1010, 42, 0, "")
    assert steady(near, 10.9, 1010.2) is near  # whole seconds apart: supervisord's own value stays
    stopped = ProcessSnapshot("w", "w", "STOPPED", 1000, 1005, 1010 - 3600, 0, 0, "")
    assert steady(stopped, None, 0.0) is stopped


def test_clock_meta_is_written_where_the_listener_reads_it(tmp_path):
    conn = connect(str(tmp_path / "db"))
    StateStore(conn).commit(Outcome(), stopping=False, meta=clock_meta(12.5, "b"))
    assert (get_meta(conn, "clock_offset"), get_meta(conn, "clock_boot")) == ("12.5", "b")


class Target(TextTarget):
    tags, key, label, scheme = frozenset(), "t", "test://t", "test"

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.down = False

    def wants(self, tags: object) -> bool:
        return True

    def send(self, title: str, body: str, notify_type: str) -> None:
        if self.down:
            raise ValueError("down")
        self.sent.append(title)


@pytest.mark.parametrize("step", [-3600.0, 7200.0])
def test_the_notifier_keeps_group_wait_and_retries_across_a_step(tmp_path, step):
    """The notifier's frame follows the loop's once the loop has moved its rows: a notice waiting
    out group_wait is sent after it, not at once, and a retry keeps its backoff (the outbox moves)."""
    config = parse_config({"state": {"path": str(tmp_path / "db")}, "alerts": {"group_wait": "10s"},
                           "notify": {"retry_initial": "20s", "retry_max": "20s"}})
    c = FakeClocks()
    clock = LookoutClock(wall=lambda: c.wall, mono=lambda: c.mono)
    conn = connect(config.state_path)
    state = StateStore(conn)
    engine = _braked_engine(clock())  # its crash-loop alert: a notice now pending
    state.commit(Outcome(records=dict(engine.records), alerts=dict(engine.book.alerts),
                         notices=[Notice(a.key, FIRING, clock()) for a in engine.book.alerts.values()]),
                 stopping=False)
    target = Target()
    notifier = Notifier(config, [target], None, clock.view())

    def turn(seconds: float) -> None:
        c.tick(seconds)
        notifier._follow_clock()
        notifier.step(notifier.clock())

    turn(3)
    c.wall += step  # the wall clock steps; the loop sees it and moves its rows
    delta = clock.step()
    turn(0.5)  # the notifier runs before the loop has committed
    state.commit(engine.shift(delta), stopping=False, shift=ClockStep(delta, clock()))
    turn(0.5)  # and between the loop's commit and its word: the rows are in another frame than its own
    assert target.sent == []
    clock.publish()
    for _ in range(9):
        turn(0.5)  # 8.5 s after the notice
    assert target.sent == [], "sent before its group_wait"
    for _ in range(4):
        turn(0.5)
    assert len(target.sent) == 1, "not sent after its group_wait"
    target.down = True  # the next message fails: its retry is due 20 s later
    DeliveryStore(conn).dispatch([], [{"target_key": "t", "target_label": "t", "scheme": "test", "title": "again",
                                       "body": "", "notify_type": "info", "about": SYSTEM_NEWS}], notifier.clock())
    turn(0.5)
    c.wall -= step  # and back again, while the retry waits
    clock.step()
    clock.publish()
    target.down = False
    for _ in range(36):
        turn(0.5)  # 18 s
    assert target.sent[1:] == [], "retried before its backoff"
    for _ in range(8):
        turn(0.5)
    assert target.sent[1:] == ["again"]


def test_the_exporter_polls_supervisord_again_after_the_wall_clock_stepped_back(tmp_path):
    """Scrapes that come during a poll share its result: judged on the monotonic clock, or a wall
    clock stepped back an hour would serve that one old poll for the hour."""
    from lookout.exporter.source import ScrapeData, Source

    wall = [EPOCH]
    src = Source(parse_config({"state": {"path": str(tmp_path / "none.db")}}), clock=lambda: wall[0])
    polls: list[float] = []

    def poll(now: float) -> ScrapeData:
        polls.append(now)
        return ScrapeData(source="supervisord", up=True, state="RUNNING")

    src._poll_supervisord = poll  # type: ignore[method-assign]
    src.read()
    wall[0] -= 3600
    src.read()
    assert len(polls) == 2
