"""Health, remediation, the crash-loop brake and quorum are decided in rules/: pure, with a fake
clock, no supervisord. The acceptance tests run the same decisions against a real one."""

from __future__ import annotations

import itertools

from lookout.config import parse_config
from lookout.listener.protocol.events import Delivery, ProcessStateEvent, SupervisorStateEvent
from lookout.listener.rules.engine import AlertEngine
from lookout.listener.rules.models import (
    BELOW_QUORUM,
    BRAKED,
    CRASH_LOOP,
    EXHAUSTED,
    FIRING,
    REMEDIATION_FAILED,
    RESOLVED,
    UNHEALTHY,
    UPDATE,
    ActionResult,
    ProbeResult,
)

SERIAL = itertools.count(1)


def engine_for(**sections) -> AlertEngine:
    c = parse_config({"probes": sections.pop("probes", []), **sections})
    return AlertEngine(c.alerts, probes=c.probes, remediation=c.remediation)


def ev(engine: AlertEngine, t: float, state: str, name: str = "svc", from_state: str = "", expected=None,
       group: str = ""):  # noqa: ANN001, ANN201
    n = next(SERIAL)
    e = ProcessStateEvent(Delivery("s", n, "p", n, f"PROCESS_STATE_{state}"), state, group or name, name, from_state,
                          expected=expected, pid=100 + n if state == "RUNNING" else None)
    return engine.on_event(e, t)


def start(engine: AlertEngine, t: float, name: str = "svc", from_state: str = "STOPPED", group: str = ""):  # noqa: ANN201
    ev(engine, t, "STARTING", name, from_state, group=group)
    return ev(engine, t + 1, "RUNNING", name, "STARTING", group=group)


def probe(engine: AlertEngine, t: float, ok: bool, name: str = "svc", probe_name: str = "http",
          detail: str = "HTTP 503"):  # noqa: ANN201
    return engine.on_probe_result(ProbeResult(f"{name}:{name}", probe_name, ok, "HTTP 200" if ok else detail, t, 0.01),
                                  t)


def said(out) -> list[tuple[str, str]]:  # noqa: ANN001
    return [(n.kind, out.alerts[n.key].kind) for n in out.notices]


HTTP = {"match": "svc", "http": {"url": "http://127.0.0.1:1/h"}, "period": "10s", "initial_delay": "30s",
        "failure_threshold": 3}


def test_threshold_grace_and_recovery():
    e = engine_for(probes=[HTTP])
    start(e, 0)  # RUNNING at 1
    assert said(probe(e, 20, False)) == []  # inside initial_delay: ignored
    assert e.health.states == {}
    assert said(probe(e, 31, False)) == [] and said(probe(e, 41, False)) == []
    out = probe(e, 51, False)
    assert said(out) == [(FIRING, UNHEALTHY)]
    alert = e.alerts[("health:http", "svc:svc")]
    assert alert.detail == "HTTP 503 3 times in a row over 30s" and out.actions == []  # action = alert
    assert said(probe(e, 61, False)) == []  # still unhealthy: said once
    assert said(probe(e, 71, True)) == [(RESOLVED, UNHEALTHY)]


def test_a_restart_resets_counts_and_reapplies_the_grace():
    e = engine_for(probes=[HTTP])
    start(e, 0)
    probe(e, 31, False)
    probe(e, 41, False)
    ev(e, 45, "STOPPED", from_state="STOPPING")  # an operator restart
    start(e, 46)  # RUNNING at 47
    assert said(probe(e, 50, False)) == []  # from inside the new grace: ignored
    assert said(probe(e, 44, False)) == []  # from before this start: ignored
    assert e.health.states["svc:svc"]["http"].consecutive_failures == 0


def test_sustained_memory_only_after_for():
    mem = {"match": "svc", "memory": {"max_rss": "100MB", "for": "5s"}, "period": "1s"}
    e = engine_for(probes=[mem])
    start(e, 0)
    for t in (2, 3, 4):  # a 3 s spike
        assert said(probe(e, t, False, probe_name="memory", detail="RSS 150 MB > 100 MB")) == []
    probe(e, 5, True, probe_name="memory")
    for t in range(6, 11):
        assert said(probe(e, t, False, probe_name="memory", detail="RSS 150 MB > 100 MB")) == []
    out = probe(e, 11, False, probe_name="memory", detail="RSS 150 MB > 100 MB")
    assert said(out) == [(FIRING, UNHEALTHY)]
    assert e.alerts[("health:memory", "svc:svc")].detail == "RSS 150 MB > 100 MB for 5s"


RESTART = {**HTTP, "action": "restart", "initial_delay": "0s", "failure_threshold": 1, "period": "1s"}
BUDGET = {"max_restarts": 3, "within": "1h", "backoff": "10s", "backoff_max": "5m"}


def answer(e: AlertEngine, action, outcome: str, t: float, **kw):  # noqa: ANN001, ANN201
    """The executor's answer to one step of lookout's action."""
    return e.on_action_result(ActionResult(action.id, action.namespec, action.step, outcome, **kw), t)


def restarted(e: AlertEngine, out, t: float) -> str:  # noqa: ANN001
    """Play supervisord for lookout's restart: its stop call (STOPPED), its start call (STARTING,
    RUNNING), each answered."""
    (action,) = out.actions
    assert (action.kind, action.step) == ("restart", "stop")
    ev(e, t, "STOPPED", from_state="STOPPING")
    (action,) = answer(e, action, "done", t + 0.05, mark=7.0).actions
    assert action.step == "start" and action.mark == 7.0
    start(e, t + 0.1)
    done = answer(e, action, "done", t + 1.2, pid=999)
    return e.alerts[("health:http", "svc:svc")].action_taken if said(done) == [(UPDATE, UNHEALTHY)] else "?"


def test_restart_budget_backoff_and_exhaustion():
    e = engine_for(probes=[RESTART], remediation=BUDGET)
    start(e, 0)
    t, restarts = 2.0, []
    while t < 400:
        out = probe(e, t, False)
        out.merge(e.on_time(t))
        if out.actions:
            restarts.append(t)
            assert restarted(e, out, t) == f"restarted by lookout, {['1st', '2nd', '3rd'][len(restarts) - 1]} of 3 " \
                                           "allowed in 1h"
            t += 1.2
        if any(n.kind == FIRING and out.alerts[n.key].kind == EXHAUSTED for n in out.notices):
            break
        t += 1
    assert len(restarts) == 3
    assert restarts[1] - restarts[0] >= 10 and restarts[2] - restarts[1] >= 20  # backoff doubles
    rec = e.records["svc:svc"]
    assert rec.remediation_exhausted and ("remediation", "svc:svc") in e.alerts
    assert all(not probe(e, t + k, False).actions and not e.on_time(t + k).actions for k in range(1, 100))
    # An operator restart resets the budget: lookout acts again.
    ev(e, t + 200, "STOPPED", from_state="STOPPING")
    assert ("remediation", "svc:svc") not in e.alerts  # closed: the operator took over
    start(e, t + 201)
    assert not rec.remediation_exhausted and rec.lookout_restarts == []
    assert probe(e, t + 203, False).actions


def test_dry_run_protected_and_stopping_never_act():
    e = engine_for(probes=[RESTART], remediation={**BUDGET, "dry_run": True})
    start(e, 0)
    out = probe(e, 2, False)
    assert not out.actions and out.remediations == [("svc:svc", "restart", "dry_run")]
    assert "would restart" in e.alerts[("health:http", "svc:svc")].action_taken
    e = engine_for(probes=[{**RESTART, "match": "lookout-exporter"}])
    start(e, 0, name="lookout-exporter")
    assert not probe(e, 2, False, name="lookout-exporter").actions
    e = engine_for(probes=[RESTART])
    start(e, 0)
    e.on_event(SupervisorStateEvent(Delivery("s", 999, "p", 999, "SUPERVISOR_STATE_CHANGE_STOPPING"), "STOPPING"), 1.5)
    assert not probe(e, 2, False).actions


def test_a_failed_restart_is_a_critical_alert():
    e = engine_for(probes=[RESTART])
    start(e, 0)
    (action,) = probe(e, 2, False).actions
    (action,) = answer(e, action, "done", 2.5, mark=1.0).actions
    out = answer(e, action, "failed", 3, detail="start: SPAWN_ERROR")
    assert said(out) == [(FIRING, REMEDIATION_FAILED)]
    alert = e.alerts[("remediation", "svc:svc")]
    assert alert.severity == "critical" and "SPAWN_ERROR" in alert.detail
    rec = e.records["svc:svc"]
    assert rec.action is None and rec.own_event_due[0].state == "STOPPED" and rec.stopped_by == "lookout"


def crash(e: AlertEngine, t: float) -> object:
    out = ev(e, t, "EXITED", from_state="RUNNING", expected=False)
    return out


def test_brake_stop():
    e = engine_for(alerts={"crash_loop": {"restarts": 3, "within": "1m", "action": "stop"}})
    start(e, 0)
    for t in (5, 10):
        crash(e, t)
        start(e, t + 0.1, from_state="EXITED")
    out = crash(e, 15)
    assert said(out) == [(FIRING, BRAKED)] and [a.kind for a in out.actions] == ["stop"]
    (action,) = out.actions
    assert action.pid == 0  # whichever run supervisord has respawned meanwhile
    assert "supervisorctl start svc`" in e.alerts[("process", "svc:svc")].detail
    start(e, 15.1, from_state="EXITED")  # supervisord respawned it meanwhile
    out = ev(e, 16, "STOPPED", from_state="STOPPING")  # whose stop: the call's answer tells
    assert ("process", "svc:svc") in e.alerts and not said(out)
    assert not said(answer(e, action, "done", 16.1, mark=16.0))  # lookout's own
    assert e.records["svc:svc"].braked and e.records["svc:svc"].stopped_by == "lookout"
    start(e, 100)  # the operator resumes it
    assert not e.records["svc:svc"].braked and e.records["svc:svc"].failures == []


def test_brake_backoff_doubles_and_resets():
    loop = {"restarts": 2, "within": "1m", "action": "backoff", "backoff": "10s", "backoff_max": "40s",
            "reset_after": "10m"}
    e = engine_for(alerts={"crash_loop": loop})
    start(e, 0)
    crash(e, 5)
    start(e, 5.1, from_state="EXITED")
    out = crash(e, 10)
    assert said(out) == [(FIRING, CRASH_LOOP)] and [a.kind for a in out.actions] == ["stop"]
    assert "lookout hold svc`" in e.alerts[("process", "svc:svc")].action_taken
    starts, t = [], 10.0
    for _ in range(4):
        ev(e, t + 0.2, "STOPPED", from_state="STOPPING")
        answer(e, out.actions[0], "done", t + 0.3, mark=t)
        while not (out := e.on_time(t)).actions:
            t += 0.5
        (action,) = out.actions
        assert (action.kind, action.step, action.mark) == ("start", "start", starts and action.mark or action.mark)
        starts.append(t)
        start(e, t + 0.1)
        answer(e, action, "done", t + 1.2, pid=500)
        t += 3
        out = crash(e, t)
        assert [a.kind for a in out.actions] == ["stop"]
    gaps = [round(b - a) for a, b in zip(starts, starts[1:])]
    assert round(starts[0] - 10) == 10 and gaps == [23, 43, 43]  # waits of 20, 40, 40 (max) after a 3 s run
    # Ten minutes RUNNING: the next crash loop starts from 10 s again.
    rec = e.records["svc:svc"]
    ev(e, t + 0.2, "STOPPED", from_state="STOPPING")
    answer(e, out.actions[0], "done", t + 0.3, mark=t)
    while not (out := e.on_time(t)).actions:
        t += 1
    start(e, t + 0.1)
    answer(e, out.actions[0], "done", t + 1.2, pid=501)
    e.on_time(t + 700)
    assert rec.brake_delay == 0


def test_quorum_counts_what_is_down_not_what_an_operator_stopped():
    """R6: members an operator stopped do not count against min_running; the alert lists the others."""
    e = engine_for(alerts={"groups": [{"match": "pool", "min_running": 3, "for": "10s"}]})
    for i in range(4):
        start(e, 0, name=f"pool_{i}", group="pool")
    for i in (0, 1):
        ev(e, 10, "STOPPED", name=f"pool_{i}", from_state="STOPPING", group="pool")
    assert said(e.on_time(15)) == [] and said(e.on_time(60)) == []  # deliberate: not an outage
    ev(e, 70, "EXITED", name="pool_2", from_state="RUNNING", expected=False, group="pool")
    ev(e, 70.1, "STARTING", name="pool_2", from_state="EXITED", group="pool")
    ev(e, 70.2, "BACKOFF", name="pool_2", from_state="STARTING", group="pool")
    ev(e, 71, "FATAL", name="pool_2", from_state="BACKOFF", group="pool")
    assert said(e.on_time(75)) == []
    out = e.on_time(81)
    assert said(out) == [(FIRING, BELOW_QUORUM)]
    detail = e.alerts[("quorum", "pool")].detail
    assert detail.startswith("pool: 1 of 4 running (minimum 3, 2 while 2 are stopped on purpose); down: pool_2 FATAL "
                             "since "), detail
    assert "pool_0" not in detail
    assert said(start(e, 90, name="pool_2", group="pool")) == [(RESOLVED, BELOW_QUORUM)]


def test_unhealthy_again_before_the_restart_result_is_back():
    """The restarted process fails its probe before the executor reports the start: lookout must
    still act on it (here: refuse, budget exhausted) once the result is back."""
    e = engine_for(probes=[RESTART], remediation={**BUDGET, "max_restarts": 1, "backoff": "1s"})
    start(e, 0)
    (action,) = probe(e, 2, False).actions
    ev(e, 2.1, "STOPPED", from_state="STOPPING")
    (action,) = answer(e, action, "done", 2.15, mark=1.0).actions
    start(e, 2.2)  # RUNNING at 3.2, the result is not back yet
    assert not probe(e, 3.5, False).actions
    out = answer(e, action, "done", 4, pid=e.records["svc:svc"].pid)
    assert said(out) == [(UPDATE, UNHEALTHY), (FIRING, EXHAUSTED)]


def test_a_restarted_listener_does_not_act_on_a_stored_verdict():
    """R2: a verdict from before the listener restarted is shown, not acted on, until new results
    of the current process agree."""
    from lookout.listener.rules.models import ProbeState, ProcessSnapshot

    e = engine_for(probes=[RESTART], remediation=BUDGET)
    start(e, 0)
    states = [ProbeState("svc:svc", "http", healthy=False, consecutive_failures=5)]
    again = AlertEngine(e.settings, e.records.values(), probes=e.policies.probe_specs,
                        remediation=e.guard.settings, probe_states=states)
    assert not again.on_time(10).actions
    assert not probe(again, 11, True).actions  # it healed: no action, ever
    assert not again.on_time(100).actions
    again = AlertEngine(e.settings, e.records.values(), probes=e.policies.probe_specs,
                        remediation=e.guard.settings, probe_states=states)
    assert not probe(again, 11.5, False).actions  # which process runs: not confirmed by supervisord yet
    rec = again.records["svc:svc"]
    again.on_snapshot([ProcessSnapshot("svc", "svc", "RUNNING", 1, 0, 12, rec.pid, 0, "")], 12, 12)
    assert [a.kind for a in probe(again, 12, False).actions] == ["restart"]  # a new failure agrees (threshold 1)
