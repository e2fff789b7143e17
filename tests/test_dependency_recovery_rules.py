"""Issue 24, found by the fresh helpers: which dependants lookout starts again, and when the need's
incident resolves (pure rules: events and times in, decisions out)."""

from __future__ import annotations

from lookout.config import AlertSettings, CrashLoop, parse_config
from lookout.listener.protocol.events import Delivery, ProcessGroupEvent
from lookout.listener.rules.engine import AlertEngine
from lookout.listener.rules.models import RESOLVED, ProbeResult
from lookout.snapshot import ProcessSnapshot

from .test_rules import ev, start

SETTINGS = AlertSettings(exit_grace=3, stable_after=60, crash_loop=CrashLoop(5, 600))


def engine_for(*deps: dict, checks: tuple[dict, ...] = ()) -> AlertEngine:
    config = parse_config({"dependencies": list(deps), "checks": list(checks)})
    return AlertEngine(SETTINGS, dependencies=config.dependencies, checks=config.checks)


def gives_up(name: str, t: float) -> list[tuple[float, object]]:
    """It dies, and supervisord's retries all die within startsecs: FATAL."""
    return [(t, ev("EXITED", name, "RUNNING", expected=False)), (t + 0.1, ev("STARTING", name, "EXITED")),
            (t + 0.2, ev("BACKOFF", name, "STARTING")), (t + 1, ev("STARTING", name, "BACKOFF")),
            (t + 1.1, ev("BACKOFF", name, "STARTING")), (t + 2, ev("FATAL", name, "BACKOFF"))]


def feed(engine: AlertEngine, steps: list[tuple[float, object]]) -> tuple[list[str], list]:
    """The history lookout wrote, and its notices (with their alerts), step by step."""
    history, notices = [], []
    for t, event in steps:
        out = engine.on_time(t) if event is None else engine.on_event(event, t)
        history += [f"{h.namespec}: {h.detail}" for h in out.history if h.kind == "action"]
        notices += [(n, out.alerts[n.key]) for n in out.notices]
    return history, notices


def test_a_dependant_broken_on_its_own_is_not_started_when_its_need_is_restarted_later():
    """An attacker: position_monitor FATAL on its own (its own page), then an operator's routine
    `supervisorctl restart risk_manager`: lookout started it ("its needs are ready"), its start failed."""
    engine = engine_for({"program": "pm", "needs": ["risk"]})
    steps = start("risk") + start("pm", 1) + gives_up("pm", 10) + [(30, None)]
    steps += [(60, ev("STOPPING", "risk", "RUNNING")), (60.5, ev("STOPPED", "risk", "STOPPING")),
              (60.6, ev("STARTING", "risk", "STOPPED")), (61.6, ev("RUNNING", "risk", "STARTING")), (70, None)]
    history, _ = feed(engine, steps)
    assert not [h for h in history if "begins to start" in h], history
    assert engine.records["pm:pm"].needs_wait == ""


def test_a_dependant_that_goes_down_with_its_need_is_still_started_once_it_is_back():
    engine = engine_for({"program": "pm", "needs": ["risk"]})
    steps = start("risk") + start("pm", 1) + [(60, ev("STOPPING", "risk", "RUNNING")),
                                              (60.5, ev("STOPPED", "risk", "STOPPING"))]
    steps += gives_up("pm", 60.7) + [(63, ev("STARTING", "risk", "STOPPED")), (64, ev("RUNNING", "risk", "STARTING"))]
    history, _ = feed(engine, steps)
    assert history == ["pm:pm: lookout begins to start it: its needs are ready (risk RUNNING)"], history


def test_a_need_that_names_nothing_holds_no_start_back():
    """An attacker: a typo'd need ("databse") and start = true: the program was never started, and
    no start_timeout alert either (check-config says such a need holds nothing back)."""
    engine = engine_for({"program": "feed", "needs": ["databse"], "start": True, "start_timeout": "3s"})
    out = engine.on_snapshot([_stopped("feed")], 1, 1.1)
    history = [f"{h.namespec}: {h.detail}" for h in out.history if h.kind == "action"]
    assert history == ["feed:feed: lookout begins to start it: start = true"], history


def test_a_need_removed_for_good_lets_its_dependants_page_and_starts_nothing():
    """An attacker: the database FATAL, its incident paged, then removed by `update`: the dependants'
    alerts stayed folded and unsent for good. Removed for a moment (update replacing it), it is not ready."""
    engine = engine_for({"program": "risk", "needs": ["db"], "grace": "2s"})
    steps = start("db") + start("risk", 1) + gives_up("db", 10) + gives_up("risk", 10.3) + [(20, None)]
    history, notices = feed(engine, steps)
    assert {a.namespec for _, a in notices} == {"db:db"} and engine.records["risk:risk"].needs_wait == "recovery"
    out = engine.on_event(ProcessGroupEvent(Delivery("s", 900, "lookout", 900, "PROCESS_GROUP_REMOVED"),
                                            "REMOVED", "db"), 30)
    assert not [n for n in out.notices if n.namespec == "risk:risk"]  # `update` may be replacing it: not yet
    history, notices = feed(engine, [(40, None), (61, None), (64, None)])
    assert [(a.namespec, a.kind, n.kind) for n, a in notices] == [("risk:risk", "fatal", "firing")], notices
    assert not [h for h in history if "begins to start" in h] and engine.records["risk:risk"].needs_wait == ""


def test_a_check_back_resolves_once_the_dependants_lookout_starts_are_up():
    """A new user: "check:vpn passes again; 2 not back: ... STOPPED", sent as lookout began starting them."""
    engine = engine_for({"program": "feed", "needs": ["check:vpn"], "start": True},
                        checks=({"name": "vpn", "tcp": "127.0.0.1:9", "period": "1s", "failure_threshold": 1},))
    engine.on_snapshot([_stopped("feed")], 1, 1.1)
    engine.on_probe_result(ProbeResult("check:vpn", "vpn", False, "refused", 2, 0.01), 2)
    engine.on_time(200)  # (its alert: down past start_timeout)
    out = engine.on_probe_result(ProbeResult("check:vpn", "vpn", True, "connected", 201, 0.01), 201)
    assert not [n for n in out.notices if n.kind == RESOLVED] and [a.kind for a in out.actions] == ["start"]


def _stopped(name: str) -> ProcessSnapshot:
    return ProcessSnapshot(name, name, "STOPPED", 0, 0, 1, 0, 0, "")


def test_the_watchs_own_times_move_with_a_wall_clock_step():
    """A step back of an hour must not hold a replaced need's starts for an hour, nor stop a dependant
    that went down with its need from being started again."""
    engine = engine_for({"program": "pm", "needs": ["risk"]})
    engine.deps.gone_at["db:db"], engine.deps.needs_fine_at["pm:pm"] = 5000.0, 5000.0
    engine.shift(-3600.0)
    assert (engine.deps.gone_at, engine.deps.needs_fine_at) == ({"db:db": 1400.0}, {"pm:pm": 1400.0})


def test_a_dependant_mended_by_an_operator_then_down_with_its_need_is_started_again():
    """A second attacker: FATAL on its own, mended and started by an operator, then down with its
    need: its old failure (failing_since) hid the new one, and it was never started again."""
    engine = engine_for({"program": "pm", "needs": ["risk"]})
    steps = start("risk") + start("pm", 1) + gives_up("pm", 10) + [(40, None)] + start("pm", 50)
    steps += [(60, ev("STOPPING", "risk", "RUNNING")), (60.5, ev("STOPPED", "risk", "STOPPING"))]
    steps += gives_up("pm", 60.7) + [(70, ev("STARTING", "risk", "STOPPED")), (71, ev("RUNNING", "risk", "STARTING"))]
    history, _ = feed(engine, steps)
    assert history == ["pm:pm: lookout begins to start it: its needs are ready (risk RUNNING)"], history


def test_after_a_listener_restart_a_dependant_paged_on_its_own_is_still_its_own():
    """A second attacker: the listener restarted while the need was down forgot when the needs were
    last fine, and started a dependant broken on its own. Its own page (sent in its present state) says it."""
    before = engine_for({"program": "pm", "needs": ["risk"]})
    feed(before, start("risk") + start("pm", 1) + gives_up("pm", 10) + [(20, None), (40, None)])
    assert before.book.get("process", "pm:pm").last_notice_at is not None
    feed(before, [(60, ev("STOPPING", "risk", "RUNNING")), (60.5, ev("STOPPED", "risk", "STOPPING"))])
    config = parse_config({"dependencies": [{"program": "pm", "needs": ["risk"]}]})
    after = AlertEngine(SETTINGS, before.records.values(), before.book.alerts.values(),
                        dependencies=config.dependencies)
    history, _ = feed(after, [(70, ev("STARTING", "risk", "STOPPED")), (71, ev("RUNNING", "risk", "STARTING")),
                              (80, None)])
    assert not [h for h in history if "begins to start" in h], history


def test_a_pattern_need_partly_replaced_by_update_holds_its_start_back():
    """A second attacker: needs db_*, db_a FATAL and replaced by `update`: the survivor db_b alone
    looked ready, and lookout started the dependant at once."""
    engine = engine_for({"program": "risk", "needs": ["db_*"], "grace": "2s"})
    steps = start("db_a") + start("db_b") + start("risk", 1) + gives_up("db_a", 10) + gives_up("risk", 10.3)
    feed(engine, steps + [(20, None)])
    assert engine.records["risk:risk"].needs_wait == "recovery"
    out = engine.on_event(ProcessGroupEvent(Delivery("s", 901, "lookout", 901, "PROCESS_GROUP_REMOVED"),
                                            "REMOVED", "db_a"), 30)
    history, _ = feed(engine, [(31, None), (40, None)])
    assert not [h for h in history + [h.detail for h in out.history] if "begins to start" in h], history


def test_a_checks_alert_closes_once_its_entry_is_gone_from_the_config():
    from lookout.listener.rules.models import Alert

    stale = Alert("check:vpn", "check_down", "warning", 10.0, 10.0, family="check", last_notice_at=11.0)
    engine = AlertEngine(SETTINGS, open_alerts=[stale])
    out = engine.on_snapshot([], 20, 20.1)
    assert [(n.namespec, n.kind) for n in out.notices] == [("check:vpn", RESOLVED)]
    assert out.alerts[("check", "check:vpn")].resolution == "removed from lookout.toml"
