"""Issue 21, case 9: a restart that lookout wanted while an operator held the program is remembered
and asked again on `lookout release`, on the probe's judgement then. Against a real supervisord."""

from __future__ import annotations

from lookout.listener.rules.models import Hold

from .harness import free_port, stays, wait_for
from .test_guards import history, lookout_cli
from .test_health_rules import BUDGET, RESTART, answer, engine_for, ev, probe, start
from .test_probes import firing, http_probe, probe_row, settings, web


def test_the_rules_remember_a_restart_held_back_and_finish_one_cut_by_a_hold():
    e = engine_for(probes=[RESTART], remediation=BUDGET)
    start(e, 0)
    rec = e.records["svc:svc"]
    e.on_holds([Hold(1, "svc:svc", 1.5)], 1.5)
    assert not probe(e, 2, False).actions and rec.remediation_wanted == "probe:http"  # held back, remembered
    assert (e.next_deadline() or 1e9) > 1000 and not e.on_time(50).actions  # nothing while held, no busy wait
    e.on_holds([], 60)
    (action,) = e.on_time(60).actions  # released: the verdict stands (the probe still fails)
    assert (action.kind, action.step, action.pid) == ("restart", "stop", rec.pid)
    # The operator holds it again between lookout's stop and its start: the rest waits for the release.
    e.on_holds([Hold(2, "svc:svc", 60.1)], 60.1)
    ev(e, 60.2, "STOPPED", from_state="STOPPING")
    out = answer(e, action, "done", 60.3, mark=1.0)
    assert not out.actions and rec.state == "STOPPED" and rec.stopped_by == "lookout"
    assert "`lookout release svc` starts it again" in e.alerts[("health:http", "svc:svc")].action_taken
    assert not e.on_time(100).actions
    e.on_holds([], 120)
    (action,) = e.on_time(120).actions
    assert (action.kind, action.step, action.mark) == ("start", "start", 1.0)  # only what its own stop stopped


def updates(webhook, needle: str) -> list:
    """Messages that say it (the resolution repeats what lookout did: not counted)."""
    return [m for m in webhook.matching(needle) if "RESOLVED" not in m.title]


def test_a_hung_program_held_then_released_is_restarted(supervisor_factory, webhook):
    port = free_port()
    probe = http_probe(port, action="restart", failure_threshold=2)  # period 1s, timeout 500ms
    sup = supervisor_factory(web(port), settings(webhook, [probe], {"backoff": "2s"})).start()
    wait_for(lambda: probe_row(sup, "web:web", "http").get("healthy") == 1, 20, "healthy first")
    held = lookout_cli(sup, "hold", "web", "--reason", "looking at it")
    assert held.returncode == 0 and "web: held" in held.stdout, held.stdout + held.stderr
    pid = sup.info("web:web")["pid"]
    (sup.root / "hang.web").touch()  # it hangs (a restart heals it)
    wait_for(lambda: firing(webhook, "web is unhealthy (http probe)"), 20, "the unhealthy alert")
    wait_for(lambda: history(sup, "web:web", "not restarted: held by an operator"), 10, "held back")
    stays(lambda: sup.info("web:web")["pid"] == pid, 4, "left as it is while held")
    assert (sup.process_row("web:web") or {}).get("remediation_wanted") == "probe:http"  # remembered, in the store

    released = lookout_cli(sup, "release", "web")
    assert released.returncode == 0 and "released" in released.stdout, released.stdout + released.stderr
    assert "restart" in released.stdout, released.stdout  # it says what lookout will do now
    wait_for(lambda: webhook.matching("restarted by lookout, 1st of 3 allowed in 1h"), 20, "the restart, said")
    assert sup.info("web:web")["pid"] != pid
    # The decision, by the listener's own clock: within one probe period + backoff of seeing the release.
    (seen, _), = history(sup, "web:web", "released: lookout may act on it again")
    (begun, _), = history(sup, "web:web", "lookout begins to restart")
    assert 0 <= begun - seen <= 1.0 + 2.0, begun - seen
    wait_for(lambda: webhook.matching("RESOLVED", "web is healthy again"), 20, "healthy again")
    stays(lambda: len(updates(webhook, "restarted by lookout")) == 1, 3, "one restart, said once")
    assert not webhook.matching("lookout's restart failed")


def test_a_restart_called_off_by_a_hold_is_done_on_release(supervisor_factory, webhook, tmp_path):
    """The hold comes while lookout gathers its evidence for the restart: called off, remembered, and
    done once released (the probe still fails), with its evidence; the budget counts one restart."""
    port, marker = free_port(), tmp_path / "evidence.web"
    probe = http_probe(port, action="restart", failure_threshold=2,
                       evidence=["sh", "-c", f"touch {marker}; sleep 2; echo stack-dump"])
    sup = supervisor_factory(web(port), settings(webhook, [probe], {"backoff": "2s", "evidence_timeout": "10s"}))
    sup.start()
    wait_for(lambda: probe_row(sup, "web:web", "http").get("healthy") == 1, 20, "healthy first")
    pid = sup.info("web:web")["pid"]
    (sup.root / "hang.web").touch()
    wait_for(marker.exists, 30, "lookout's evidence command running")
    assert "web: held" in lookout_cli(sup, "hold", "web").stdout
    wait_for(lambda: history(sup, "web:web", "lookout's restart", "an operator holds it"), 15, "called off")
    stays(lambda: sup.info("web:web")["pid"] == pid, 3, "left as it is while held")
    marker.unlink()
    assert lookout_cli(sup, "release", "web").returncode == 0
    wait_for(lambda: updates(webhook, "restarted by lookout, 1st of 3 allowed in 1h"), 30, "the restart, said")
    assert marker.exists() and sup.info("web:web")["pid"] != pid  # its evidence gathered again, then restarted
    wait_for(lambda: webhook.matching("RESOLVED", "web is healthy again"), 20, "healthy again")
    assert len(updates(webhook, "restarted by lookout")) == 1


def test_a_probes_stop_is_never_undone_by_a_restart_it_wanted_meanwhile():
    e = engine_for(probes=[{**RESTART, "action": "stop"}], remediation=BUDGET)
    start(e, 0)
    (action,) = probe(e, 2, False).actions
    assert not probe(e, 3, False).actions  # fails again while lookout's stop is under way: wanted, remembered
    ev(e, 3.1, "STOPPED", from_state="STOPPING")
    out = answer(e, action, "done", 3.2, mark=1.0)
    assert not out.actions and not e.on_time(100).actions  # it stays stopped, as the probe's action says
    assert e.records["svc:svc"].remediation_wanted == ""


def test_a_restart_wanted_during_the_brakes_stop_does_not_undo_it():
    e = engine_for(probes=[RESTART], remediation=BUDGET,
                   alerts={"crash_loop": {"restarts": 2, "within": "1m", "action": "stop"}})
    start(e, 0)
    ev(e, 5, "EXITED", from_state="RUNNING", expected=False)
    start(e, 5.1, from_state="EXITED")
    (stop,) = ev(e, 10, "EXITED", from_state="RUNNING", expected=False).actions  # a crash loop: the brake stops it
    start(e, 10.1, from_state="EXITED")  # (supervisord respawned it before the brake's call)
    rec = e.records["svc:svc"]
    assert rec.action is not None and rec.action.source == "brake"
    assert not probe(e, 12, False).actions and rec.remediation_wanted == "probe:http"  # judged meanwhile
    ev(e, 12.5, "STOPPED", from_state="STOPPING")
    assert not answer(e, stop, "done", 12.6, mark=10.0).actions  # stopped by the brake: it stays stopped
    assert not e.on_time(100).actions and rec.state == "STOPPED" and rec.remediation_wanted == ""
