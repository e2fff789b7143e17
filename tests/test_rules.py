"""The rules are pure: events + time in, decisions out. No supervisord needed here."""

from __future__ import annotations

import dataclasses
import itertools

from lookout.config import AlertSettings, CrashLoop, ProgramRule
from lookout.listener.protocol.events import Delivery, ProcessStateEvent, SupervisorStateEvent
from lookout.listener.rules.engine import AlertEngine
from lookout.listener.rules.models import (
    CRASH_LOOP,
    CRASHED,
    EXITED,
    FATAL,
    FIRING,
    REMINDER,
    RESOLVED,
    UPDATE,
    ProcessSnapshot,
)
from lookout.listener.rules.sequence import StreamPosition, check_continuity

SERIAL = itertools.count(1)


def ev(
    state: str, name: str = "web", from_state: str = "", expected: bool | None = None, group: str = ""
) -> ProcessStateEvent:
    n = next(SERIAL)
    return ProcessStateEvent(
        Delivery("s", n, "lookout", n, f"PROCESS_STATE_{state}"),
        state,
        group or name,
        name,
        from_state,
        expected=expected,
    )


def sup(state: str) -> SupervisorStateEvent:
    n = next(SERIAL)
    return SupervisorStateEvent(Delivery("s", n, "lookout", n, f"SUPERVISOR_STATE_CHANGE_{state}"), state)


SETTINGS = AlertSettings(
    group_wait=0, repeat_interval=3600, stable_after=60, exit_grace=3, crash_loop=CrashLoop(3, 600)
)


def supervisord_view(engine: AlertEngine, t: float) -> list[ProcessSnapshot]:
    """What getAllProcessInfo would answer at t if our records are right."""
    return [ProcessSnapshot(r.group, r.name, r.state, int(r.running_since or r.last_start or 0), 0, int(t),
                            r.pid or 0, 0, "") for r in engine.records.values()]


def run(engine: AlertEngine, steps: list[tuple[float, object]]) -> list[tuple[float, str, str, str]]:
    """Feed (time, event) pairs, ticking time in between; returns notices with alert kinds. A
    reconcile the engine asks for to confirm a stable run is answered from its own records."""
    said = []
    for t, event in steps:
        outcome = engine.on_time(t) if event is None else engine.on_event(event, t)
        if "runs stably" in outcome.reconcile:
            outcome.merge(engine.on_snapshot(supervisord_view(engine, t), t, t))
        for n in outcome.notices:
            said.append((t, n.kind, outcome.alerts[n.key].kind, n.namespec))
    return said


def start(name: str = "web", t: float = 0.0) -> list[tuple[float, object]]:
    return [(t, ev("STARTING", name, "STOPPED")), (t + 1, ev("RUNNING", name, "STARTING"))]


def crash(t: float, name: str = "web") -> list[tuple[float, object]]:
    return [
        (t, ev("EXITED", name, "RUNNING", expected=False)),
        (t + 0.01, ev("STARTING", name, "EXITED")),
        (t + 1, ev("RUNNING", name, "STARTING")),
    ]


def test_single_crash_then_recovery():
    engine = AlertEngine(SETTINGS)
    said = run(engine, start() + crash(10) + [(70, None), (71.5, None)])
    assert said == [(10.01, FIRING, CRASHED, "web:web"), (71.5, RESOLVED, CRASHED, "web:web")]
    rec = engine.records["web:web"]
    assert (rec.restarts, rec.unexpected_exits, rec.crash_looping, rec.failing_since) == (1, 1, False, None)


def test_crash_loop_escalates_once_and_reminds():
    engine = AlertEngine(SETTINGS)
    steps = start() + crash(10) + crash(13) + crash(16) + crash(19) + crash(22)[:2]  # still STARTING
    said = run(engine, steps)
    # issue 23: a repeat crash below the threshold is an update ("crashed again"), not silence
    assert [s[1:3] for s in said] == [(FIRING, CRASHED), (UPDATE, CRASHED), (FIRING, CRASH_LOOP)]
    assert engine.records["web:web"].crash_looping
    assert run(engine, [(16 + 3600, None)]) == [(3616, REMINDER, CRASH_LOOP, "web:web")]
    assert run(engine, [(3700, None)]) == []


def test_backoff_then_fatal_gives_one_gave_up():
    engine = AlertEngine(AlertSettings(crash_loop=CrashLoop(5, 600)))
    steps = [(0, ev("STARTING", "x", "STOPPED"))]
    for i in range(3):  # startretries=3: four attempts, four BACKOFFs, then FATAL
        steps += [(i + 0.5, ev("BACKOFF", "x", "STARTING")), (i + 1, ev("STARTING", "x", "BACKOFF"))]
    steps += [(5, ev("BACKOFF", "x", "STARTING")), (5.1, ev("FATAL", "x", "BACKOFF"))]
    assert [s[1:3] for s in run(engine, steps)] == [(FIRING, FATAL)]
    assert engine.records["x:x"].unexpected_exits == 4


def test_unexpected_exit_without_respawn_is_exited_after_grace():
    engine = AlertEngine(SETTINGS)
    said = run(engine, start("once") + [(10, ev("EXITED", "once", "RUNNING", expected=False)), (12, None)])
    assert said == []
    assert engine.next_deadline() == 13
    assert engine.on_time(13).reconcile  # no respawn seen: ask supervisord, do not guess
    assert engine.next_deadline() is None
    snap = [ProcessSnapshot("once", "once", "EXITED", 1, 10, 13, 0, 5, "Bad exit code 5")]
    out = engine.on_snapshot(snap, 13, 13.1)
    # supervisord may just not have run its respawn yet (a starved loop): ask once more
    assert out.notices == [] and out.reconcile and engine.next_deadline() is None
    out = engine.on_snapshot(snap, 13.2, 13.3)
    assert [(n.kind, out.alerts[n.key].kind) for n in out.notices] == [(FIRING, EXITED)]


def test_respawn_after_one_exited_sighting_is_a_crash():
    engine = AlertEngine(SETTINGS)
    run(engine, start("slow") + [(10, ev("EXITED", "slow", "RUNNING", expected=False))])
    assert engine.on_time(13).reconcile
    snap = [ProcessSnapshot("slow", "slow", "EXITED", 1, 10, 13, 0, 3, "Bad exit code 3")]
    assert engine.on_snapshot(snap, 13, 13.1).reconcile
    assert run(engine, [(13.5, ev("STARTING", "slow", "EXITED"))]) == [(13.5, FIRING, CRASHED, "slow:slow")]


def test_late_respawn_in_a_storm_is_still_a_crash():
    engine = AlertEngine(SETTINGS)
    run(engine, start("w") + [(10, ev("EXITED", "w", "RUNNING", expected=False))])
    assert engine.on_time(20).reconcile
    snap = [ProcessSnapshot("w", "w", "RUNNING", 11, 10, 20, 99, -1, "")]
    assert engine.on_snapshot(snap, 20, 20.1).notices == []
    said = run(engine, [(21, ev("STARTING", "w", "EXITED"))])
    assert said == [(21, FIRING, CRASHED, "w:w")]


def test_expected_exit_and_operator_stop_say_nothing():
    engine = AlertEngine(SETTINGS)
    steps = start("a") + [(5, ev("EXITED", "a", "RUNNING", expected=True))]
    steps += start("b") + [(6, ev("STOPPING", "b", "RUNNING")), (7, ev("STOPPED", "b", "STOPPING"))]
    steps += [(8, ev("STARTING", "b", "STOPPED")), (9, ev("RUNNING", "b", "STARTING")), (200, None)]
    assert run(engine, steps) == []


def test_supervisor_stopping_suppresses_everything():
    engine = AlertEngine(SETTINGS)
    steps = start() + [
        (5, sup("STOPPING")),
        (6, ev("EXITED", "web", "RUNNING", expected=False)),
        (7, ev("BACKOFF", "other", "STARTING")),
        (8, ev("FATAL", "other", "BACKOFF")),
        (100, None),
    ]
    assert run(engine, steps) == []
    # After the reload, supervisord is RUNNING again and alerts flow.
    steps = [(200, sup("RUNNING"))] + start(t=201) + crash(210)
    # (the exit while supervisord stopped is said at its next start; the crash after it: "crashed again")
    assert [s[1:3] for s in run(engine, steps)] == [(FIRING, CRASHED), (UPDATE, CRASHED)]


def test_operator_stop_resolves_open_alert():
    engine = AlertEngine(SETTINGS)
    run(engine, start() + crash(10))
    said = run(engine, [(20, ev("STOPPING", "web", "RUNNING")), (21, ev("STOPPED", "web", "STOPPING"))])
    assert said == [(21, RESOLVED, CRASHED, "web:web")]


def test_snapshot_alerts_fatal_exactly_once():
    snap = [ProcessSnapshot("g", "dead", "FATAL", 100, 101, 200, 0, 0, "can't find command 'x'")]
    engine = AlertEngine(SETTINGS)
    first = engine.on_snapshot(snap, 199.0, 200.0)
    assert [(n.kind, first.alerts[n.key].kind) for n in first.notices] == [(FIRING, FATAL)]
    assert first.alerts[("process", "g:dead")].detail == "can't find command 'x'"
    # A restarted listener loads the open alert and stays quiet.
    again = AlertEngine(SETTINGS, engine.records.values(), engine.alerts.values())
    assert again.on_snapshot(snap, 300.0, 300.0).notices == []


def test_stale_snapshot_does_not_undo_newer_events():
    engine = AlertEngine(SETTINGS)
    run(engine, start())
    snap = [ProcessSnapshot("web", "web", "STOPPED", 0, 0, 0, 0, 0, "")]
    engine.on_snapshot(snap, taken_at=0.5, now=2)
    assert engine.records["web:web"].state == "RUNNING"


def test_program_rules_ignore_and_severity():
    settings = AlertSettings(
        exit_grace=3,
        crash_loop=CrashLoop(3, 600),
        programs=(
            ProgramRule("batch:*", ignore=True),
            ProgramRule("trading:*", severity="critical", tags=("pager",)),
        ),
    )
    engine = AlertEngine(settings)
    assert (
        run(
            engine,
            start("w", 0)
            + crash(5, "w")[:0]
            + [
                (5, ev("EXITED", "w", "RUNNING", False, group="batch")),
                (5.1, ev("STARTING", "w", "EXITED", group="batch")),
            ],
        )
        == []
    )
    out = engine.on_event(ev("EXITED", "feed", "RUNNING", False, group="trading"), 10)
    out = engine.on_event(ev("STARTING", "feed", "EXITED", group="trading"), 10.1)
    alert = out.alerts[("process", "trading:feed")]
    assert (alert.kind, alert.severity, alert.tags) == (CRASHED, "critical", ("pager",))


def test_own_events_are_recorded_but_never_alerted():
    engine = AlertEngine(SETTINGS, own_namespec="lookout:lookout")
    out = engine.on_event(ev("EXITED", "lookout", "RUNNING", False), 1)
    out = engine.on_event(ev("STARTING", "lookout", "EXITED"), 1.1)
    assert not out.notices and engine.records["lookout:lookout"].restarts == 1


def test_continuity():
    a = StreamPosition("s:1", "lookout", 5)
    assert check_continuity(a, StreamPosition("s:1", "lookout", 6)) == ""
    assert "lost" in check_continuity(a, StreamPosition("s:1", "lookout", 9))
    assert "reloaded" in check_continuity(a, StreamPosition("s:1", "lookout", 1))
    assert "restarted" in check_continuity(a, StreamPosition("s:2", "lookout", 1))


def test_spawn_time_exact_wins_and_whole_seconds_only_correct_what_they_contradict():
    engine = AlertEngine(SETTINGS)
    run(engine, [(105.0, ev("STARTING", "web", "STOPPED"))])  # this event waited 5 s in supervisord
    rec = engine.records["web:web"]
    assert rec.last_start == 105.0
    assert engine.on_start_observed("web:web", 100.0).records  # whole seconds contradict it: taken
    assert rec.last_start == 100.0
    assert engine.on_start_observed("web:web", 100.37, exact=True).records  # the kernel's fork time
    assert rec.last_start == 100.37
    assert not engine.on_start_observed("web:web", 100.0).records  # consistent: the exact one stays
    snap = [ProcessSnapshot("web", "web", "STARTING", 100, 0, 110, 7, 0, "")]
    engine.on_snapshot(snap, taken_at=110.2, now=110.2)
    assert rec.last_start == 100.37


def test_late_events_never_make_up_a_run_time():
    """Events that waited in supervisord: the RUNNING arrives after its process died (the loop
    found no such pid), and a start lookup answers about the respawn that followed. Neither
    may turn a 1.3 s run into "2ms": the run time stays unknown until supervisord's log says."""
    import dataclasses

    engine = AlertEngine(SETTINGS)
    run(engine, [(110.0, ev("STARTING", "web", "STOPPED"))])
    running = dataclasses.replace(ev("RUNNING", "web", "STARTING"), pid=4242)
    engine.on_event(running, 110.001)
    engine.on_start_unknown("web:web")
    assert not engine.on_start_observed("web:web", 110.001, pid=4300).records  # the respawn's pid
    exited = dataclasses.replace(ev("EXITED", "web", "RUNNING", expected=False), pid=4242)
    engine.on_event(exited, 110.002)
    rec = engine.records["web:web"]
    assert rec.last_run_seconds is None
    engine.on_exit_observed("web:web", 1, "exit status 1", ran=1.3)
    assert rec.last_run_seconds == 1.3


def test_an_exit_from_before_the_listener_needs_two_sightings_too():
    """At start, the reconcile may catch a crashed process in the instant before supervisord
    respawns it: "exited and will not be restarted" only when a second answer agrees."""
    engine = AlertEngine(SETTINGS)
    snap = [ProcessSnapshot("w", "w", "EXITED", 1, 10, 10, 0, 6, "Bad exit code 6")]
    out = engine.on_snapshot(snap, 10, 10.05)
    assert out.notices == [] and out.reconcile
    respawned = [ProcessSnapshot("w", "w", "STARTING", 11, 10, 11, 42, 0, "")]
    assert engine.on_snapshot(respawned, 11, 11.05).notices == []
    out = engine.on_snapshot(snap, 12, 12.05)  # a later exit, seen once: still no alert
    assert out.notices == []
    out = engine.on_snapshot(snap, 13, 13.05)
    assert [(n.kind, out.alerts[n.key].kind) for n in out.notices] == [(FIRING, EXITED)]
    assert engine.records["w:w"].last_exit_text == "exit status 6"


def test_a_stable_run_is_resolved_only_when_supervisord_agrees():
    """Events reach us late under load: RUNNING for stable_after by our clock is not enough if
    supervisord says the process crashed and started again meanwhile."""
    engine = AlertEngine(SETTINGS)
    run(engine, start() + crash(10))
    out = engine.on_time(72)
    assert out.notices == [] and "runs stably" in out.reconcile
    newer = [ProcessSnapshot("web", "web", "RUNNING", 70, 69, 72, 999, 0, "")]  # another process, 2 s old
    assert engine.on_snapshot(newer, 72, 72).notices == []
    assert ("process", "web:web") in engine.alerts
    out = engine.on_time(73)
    assert "runs stably" in out.reconcile  # asks again later
    agreed = engine.on_snapshot(supervisord_view(engine, 73), 73, 73)
    assert [(n.kind, agreed.alerts[n.key].kind) for n in agreed.notices] == [(RESOLVED, CRASHED)]


def test_a_stable_run_seen_before_its_events_is_not_resolved_until_they_arrive():
    """A restarted listener's reconcile sees the newest run, stable, while the events of the runs
    before it (crashes) still wait in supervisord's buffer: resolving then would split one crash
    loop into "recovered" and a new crash (found by the kill -9 storm test)."""
    from lookout.listener.rules.models import Alert, ProcessRecord, ProcessSnapshot

    rec = ProcessRecord(group="w", name="w")
    rec.state, rec.pid, rec.event_pid, rec.present = "RUNNING", 4004, 2002, True  # pid from a reconcile
    rec.failing_since, rec.running_since = 100.0, 105.0
    engine = AlertEngine(SETTINGS, [rec], [Alert("w:w", CRASHED, "warning", 100.0, 100.0, id=1)])
    view = [ProcessSnapshot("w", "w", "RUNNING", 105, 0, 170, 4004, 0, "")]
    assert "runs stably" in engine.on_time(170).reconcile
    assert not engine.on_snapshot(view, 170, 170).notices  # its own RUNNING event has not come yet
    assert not engine.on_time(171).reconcile  # and it is not asked again at once
    running = ev("RUNNING", "w", "STARTING")
    engine.on_event(dataclasses.replace(running, pid=4004), 172)  # the queued events arrive
    assert "runs stably" in engine.on_time(172 + 60).reconcile
    said = engine.on_snapshot([ProcessSnapshot("w", "w", "RUNNING", 172, 0, 232, 4004, 0, "")], 232, 232)
    assert [n.kind for n in said.notices] == [RESOLVED]


def _pev(state: str, from_state: str, pid: int | None = None, expected: bool | None = None) -> ProcessStateEvent:
    return dataclasses.replace(ev(state, "w", from_state, expected=expected), pid=pid)


def test_a_listener_down_longer_than_the_grace_still_waits_for_the_queued_crashes():
    """The 30 s for events lost runs from when the listener first asks, not from the run's start:
    a listener that was down for minutes still hears the queued crashes as one crash loop."""
    from lookout.listener.rules.models import Alert, ProcessRecord, ProcessSnapshot

    rec = ProcessRecord(group="w", name="w")
    rec.state, rec.pid, rec.event_pid, rec.present = "RUNNING", 100, 100, True
    rec.failing_since, rec.running_since, rec.last_start, rec.failures = 1000.0, 1001.0, 1000.0, [1000.0]
    engine = AlertEngine(SETTINGS, [rec], [Alert("w:w", CRASHED, "warning", 1000.0, 1000.0, id=1)])

    def view(t: float) -> list[ProcessSnapshot]:
        return [ProcessSnapshot("w", "w", "RUNNING", 1016, 0, int(t), 150, 0, "")]  # pid 150 since 1016

    said = []

    def tick(t: float, until: float) -> float:
        """Time passes; every reconcile asked for is answered by supervisord's view."""
        while t < until:
            out = engine.on_time(t)
            if out.reconcile:
                out.merge(engine.on_snapshot(view(t), t, t))
            said.extend((n.kind, out.alerts[n.key].kind) for n in out.notices)
            t += 0.5
        return t

    engine.on_snapshot(view(1200), 1200, 1200)  # the new listener's first reconcile, 3 minutes later
    t = tick(1200.5, 1203.5)
    for pid in (100, 120, 130):  # the crashes queued in supervisord arrive
        for event in (_pev("EXITED", "RUNNING", pid, False), _pev("STARTING", "EXITED"),
                      _pev("RUNNING", "STARTING", {100: 120, 120: 130, 130: 150}[pid])):
            out = engine.on_event(event, t)
            said += [(n.kind, out.alerts[n.key].kind) for n in out.notices]
            t += 0.01
    tick(t, 1300)
    # one episode: crashed again (an update, issue 23), escalated, then over
    assert said == [(UPDATE, CRASHED), (FIRING, CRASH_LOOP), (RESOLVED, CRASH_LOOP)], said


def test_many_runs_waiting_for_their_events_share_one_reconcile_every_2s():
    from lookout.listener.rules.models import Alert, ProcessRecord, ProcessSnapshot

    records, alerts = [], []
    for i in range(40):
        rec = ProcessRecord(group=f"p{i}", name=f"p{i}")
        rec.state, rec.pid, rec.event_pid, rec.present = "RUNNING", 5000 + i, 100 + i, True
        rec.failing_since, rec.running_since, rec.last_start = 1000.0, 1000.0 + i * 0.1, 1000.0 + i * 0.1
        records.append(rec)
        alerts.append(Alert(rec.namespec, CRASHED, "warning", 1000.0, 1000.0, id=i + 1))
    engine = AlertEngine(SETTINGS, records, alerts)
    view = [ProcessSnapshot(f"p{i}", f"p{i}", "RUNNING", int(1000 + i * 0.1), 0, 0, 5000 + i, 0, "")
            for i in range(40)]
    t, asks, resolved = 1000.0, 0, 0
    while (deadline := engine.next_deadline()) is not None:
        t = max(t + 0.05, deadline)  # the loop wakes at the deadline
        out = engine.on_time(t)
        if out.reconcile:
            asks += 1
            out.merge(engine.on_snapshot([dataclasses.replace(v, now=int(t)) for v in view], t, t + 0.05))
        resolved += sum(n.kind == RESOLVED for n in out.notices)
    assert resolved == 40
    assert asks <= 40 + 17, asks  # each one's first check, then one shared recheck every 2 s for 30 s
