"""must_run, as rules (pure): a program that must run is down after any exit, expected or not,
once its grace is over and supervisord confirms it; never for an operator's stop."""

from __future__ import annotations

from lookout.config import AlertSettings, CrashLoop, ProgramRule
from lookout.listener.rules.engine import AlertEngine
from lookout.listener.rules.models import CRASHED, FIRING, NOT_RUNNING, RESOLVED, ProcessSnapshot

from .test_rules import crash, ev, run, start

SETTINGS = AlertSettings(exit_grace=3, stable_after=60, crash_loop=CrashLoop(5, 600),
                         programs=(ProgramRule("critical_service", must_run=True, grace=10),))


def exited(name: str, stop: int, t: int, code: int = 0) -> list[ProcessSnapshot]:
    return [ProcessSnapshot(name, name, "EXITED", 1, stop, t, 0, code, "")]


def kinds(out) -> list[tuple[str, str]]:  # noqa: ANN001
    return [(n.kind, out.alerts[n.key].kind) for n in out.notices]


def test_an_expected_exit_of_a_must_run_program_is_an_alert_after_its_grace_when_supervisord_agrees():
    engine = AlertEngine(SETTINGS)
    said = run(engine, start("critical_service") + [(5, ev("EXITED", "critical_service", "RUNNING", expected=True)),
                                                    (14, None)])
    assert said == []
    assert engine.next_deadline() == 15
    assert "still down" in engine.on_time(15).reconcile  # asked, not guessed
    out = engine.on_snapshot(exited("critical_service", 5, 15), 15, 15.1)
    assert out.notices == [] and out.reconcile  # one answer may be from before a respawn: a second must agree
    out = engine.on_snapshot(exited("critical_service", 5, 16), 16, 16.1)
    assert kinds(out) == [(FIRING, NOT_RUNNING)]
    alert = out.alerts[("process", "critical_service:critical_service")]
    assert (alert.opened_at, alert.severity) == (5, "critical")  # down since the exit, not since confirmed
    assert engine.next_deadline() > 3600  # once (its next deadline is the reminder)


def test_a_reconcile_before_the_grace_is_over_does_not_bring_the_alert_forward():
    engine = AlertEngine(SETTINGS)
    run(engine, start("critical_service") + [(5, ev("EXITED", "critical_service", "RUNNING", expected=True))])
    for t in (6, 7, 8):
        assert engine.on_snapshot(exited("critical_service", 5, t), t, t + 0.1).notices == []
    assert engine.on_time(15).reconcile
    engine.on_snapshot(exited("critical_service", 5, 15), 15, 15.1)
    assert kinds(engine.on_snapshot(exited("critical_service", 5, 16), 16, 16.1)) == [(FIRING, NOT_RUNNING)]


def test_a_respawn_within_the_grace_an_operator_stop_and_programs_not_must_run_say_nothing():
    engine = AlertEngine(SETTINGS)
    steps = start("critical_service") + [(5, ev("EXITED", "critical_service", "RUNNING", expected=True)),
                                         (5.5, ev("STARTING", "critical_service", "EXITED")),
                                         (6.5, ev("RUNNING", "critical_service", "STARTING")), (30, None)]
    steps += [(40, ev("STOPPING", "critical_service", "RUNNING")), (41, ev("STOPPED", "critical_service", "STOPPING")),
              (100, None)]
    steps += start("other", 200) + [(205, ev("EXITED", "other", "RUNNING", expected=True)), (300, None)]
    assert run(engine, steps) == []
    assert engine.next_deadline() is None


def test_down_from_before_the_listener_is_found_by_the_reconcile():
    engine = AlertEngine(SETTINGS)
    out = engine.on_snapshot(exited("critical_service", 3, 20), 20, 20.1)  # exited at 3, before we listened
    assert out.notices == []
    assert engine.records["critical_service:critical_service"].down_since == 3
    assert engine.on_time(20.2).reconcile  # its grace was over long ago: asked at once
    engine.on_snapshot(exited("critical_service", 3, 21), 21, 21.1)
    out = engine.on_snapshot(exited("critical_service", 3, 22), 22, 22.1)
    assert kinds(out) == [(FIRING, NOT_RUNNING)]
    assert out.alerts[("process", "critical_service:critical_service")].opened_at == 3


def test_an_open_crash_escalates_and_the_run_afterwards_resolves_it():
    engine = AlertEngine(SETTINGS)
    said = run(engine, start("critical_service") + crash(5, "critical_service")
               + [(10, ev("EXITED", "critical_service", "RUNNING", expected=True))])
    assert [s[1:3] for s in said] == [(FIRING, CRASHED)]
    engine.on_time(20)
    engine.on_snapshot(exited("critical_service", 10, 20), 20, 20.1)
    out = engine.on_snapshot(exited("critical_service", 10, 21), 21, 21.1)
    assert kinds(out) == [(FIRING, NOT_RUNNING)]
    said = run(engine, [(30, ev("STARTING", "critical_service", "EXITED")),
                        (31, ev("RUNNING", "critical_service", "STARTING")), (95, None)])
    assert [s[1:3] for s in said] == [(RESOLVED, NOT_RUNNING)]


def test_a_periodic_reconcile_after_the_alert_does_not_raise_it_again():
    engine = AlertEngine(SETTINGS)
    run(engine, start("critical_service") + [(5, ev("EXITED", "critical_service", "RUNNING", expected=True))])
    engine.on_time(15)
    engine.on_snapshot(exited("critical_service", 5, 15), 15, 15.1)
    assert kinds(engine.on_snapshot(exited("critical_service", 5, 16), 16, 16.1)) == [(FIRING, NOT_RUNNING)]
    for t in (76, 136, 196):
        out = engine.on_snapshot(exited("critical_service", 5, t), t, t + 0.1)
        assert out.notices == [] and not out.reconcile
        assert not engine.on_time(t + 20).reconcile


def test_a_crash_respawned_in_milliseconds_was_down_that_long_not_until_called_stable():
    """Issue 23, true times: the resolution's downtime ends when the run that proved stable began."""
    from lookout.listener.notifier.render import _resolved_block
    from lookout.listener.store.delivery import PendingNotice

    from .test_rules import SETTINGS as PLAIN
    from .test_rules import supervisord_view

    engine = AlertEngine(PLAIN)
    run(engine, start("feed") + [(10, ev("EXITED", "feed", "RUNNING", expected=False)),
                                 (10.016, ev("STARTING", "feed", "EXITED")),
                                 (11.02, ev("RUNNING", "feed", "STARTING"))])
    assert engine.on_time(71.5).reconcile
    out = engine.on_snapshot(supervisord_view(engine, 71.5), 71.5, 71.5)
    (notice,) = out.notices
    alert = out.alerts[notice.key]
    assert (notice.kind, alert.back_at) == (RESOLVED, 10.016)
    text = "\n".join(_resolved_block(PendingNotice(1, RESOLVED, 71.5, alert, engine.records["feed:feed"]), "vm"))
    assert "down 16ms (since" in text, text


def test_a_problem_found_by_the_first_reconcile_is_failing_since_supervisords_time_or_earlier():
    """Issue 23, true times: lookout was not there to see it; supervisord's stop time, "or earlier"."""
    from lookout.listener.notifier.render import Enrichment, firing_block
    from lookout.listener.rules.models import EXITED
    from lookout.listener.store.delivery import PendingNotice

    from .test_rules import SETTINGS as PLAIN

    engine = AlertEngine(PLAIN)
    snap = [ProcessSnapshot("w", "w", "EXITED", 1, 700, 1000, 0, 6, "Bad exit code 6")]  # exited at 700
    engine.on_snapshot(snap, 1000, 1000.05)
    out = engine.on_snapshot(snap, 1001, 1001.05)
    (notice,) = out.notices
    alert = out.alerts[notice.key]
    assert (alert.kind, alert.opened_at, alert.at_least) == (EXITED, 700, True)
    text = "\n".join(firing_block(PendingNotice(1, FIRING, 1001, alert, engine.records["w:w"]), "vm", 1001,
                                  Enrichment(), 5))
    assert "or earlier (at least 5m1s)" in text, text
    seen = AlertEngine(PLAIN)  # one it saw happen: no "or earlier"
    run(seen, start("w") + crash(10, "w"))
    assert not seen.book.get("process", "w:w").at_least


def test_a_respawn_before_lookout_heard_of_the_exit_is_respawned_at_once():
    """Found by a new user: the spawn (kernel time) 8 ms before lookout's time of the exit made the
    resolution fall back to "down 1m1s", stable_after included."""
    import dataclasses

    from lookout.listener.notifier.render import _resolved_block
    from lookout.listener.rules.models import Alert
    from lookout.listener.store.delivery import PendingNotice

    alert = Alert("feed:feed", "crashed", "warning", 100.0, 161.0, failures=1, resolved_at=161.0,
                  resolution="recovered", back_at=99.992)
    text = "\n".join(_resolved_block(PendingNotice(1, RESOLVED, 161.0, alert, None), "vm"))
    assert "after a crash; respawned at once (since" in text and "1m1s" not in text, text
    later = dataclasses.replace(alert, back_at=100.5)
    assert "down 500ms" in "\n".join(_resolved_block(PendingNotice(1, RESOLVED, 161.0, later, None), "vm"))


def test_must_run_taken_out_of_the_config_before_a_listener_restart_raises_nothing():
    """Found by an attacker: the stored down_since raised "must run" after must_run = false."""
    import copy

    engine = AlertEngine(SETTINGS)
    run(engine, start("critical_service") + [(5, ev("EXITED", "critical_service", "RUNNING", expected=True))])
    records = [copy.deepcopy(r) for r in engine.records.values()]
    relaxed = AlertEngine(AlertSettings(exit_grace=3, stable_after=60, crash_loop=CrashLoop(5, 600)), records)
    assert not relaxed.on_time(30).reconcile
    for t in (30, 31, 32):
        assert relaxed.on_snapshot(exited("critical_service", 5, t), t, t + 0.1).notices == []
    assert relaxed.records["critical_service:critical_service"].down_since is None


def test_a_program_removed_while_its_grace_is_asked_about_is_asked_again_once_it_is_back():
    """Found by an attacker: the name stayed "being confirmed" after the answer that did not list it,
    so the program, added back and down again, waited for the periodic reconcile (up to minutes)."""
    engine = AlertEngine(SETTINGS)
    run(engine, start("critical_service") + [(5, ev("EXITED", "critical_service", "RUNNING", expected=True))])
    assert engine.on_time(15).reconcile
    engine.on_snapshot([], 15, 15.1)  # `supervisorctl update` removed it meanwhile
    back = [ProcessSnapshot("critical_service", "critical_service", "RUNNING", 20, 0, 20, 42, 0, "")]
    engine.on_snapshot(back, 20, 20.1)
    run(engine, [(30, ev("EXITED", "critical_service", "RUNNING", expected=True))])
    assert "still down" in engine.on_time(40).reconcile  # its grace, not the next periodic reconcile
