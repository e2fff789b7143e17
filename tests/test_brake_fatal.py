"""Issue 21, case 1: the crash-loop brake's own cycle survives a program that went FATAL. A program
whose dependency is missing exits at once, so supervisord gives up (FATAL) at boot; with
crash_loop.action = "backoff" lookout starts it again after each wait, and once the dependency is
back it runs. An operator's hold keeps it down until released. Against a real supervisord."""

from __future__ import annotations

import pytest

from lookout.listener.rules.models import REMEDIATION

from .conftest import fast_alerts
from .harness import stays, wait_for
from .test_guards import history, lookout_cli, spawns
from .test_health_rules import answer, engine_for, ev

GATEWAY = """\
[program:gw]
command=sh -c 'if [ -f %(here)s/db.up ]; then exec sleep 1000; fi; echo "gw: database unreachable" >&2; exit 1'
startsecs=1
startretries=3
autorestart=true
stopwaitsecs=1
"""
# The 4th failure is the crash loop: supervisord's 4th BACKOFF, which it turns FATAL at once (startretries=3),
# so the brake's first stop finds the program FATAL.
LOOP = {"restarts": 4, "within": "1m", "action": "backoff", "backoff": "4s", "backoff_max": "8s"}
HOLD_LOOP = {**LOOP, "backoff": "8s"}  # time to look at `lookout status` and hold it before the brake's start


def test_the_brakes_cycle_goes_on_through_fatal_and_a_start_that_dies():
    """The rules alone: the brake's stop finds it FATAL, its start after the wait dies again; each is
    the next round of the brake, never 'lookout failed' nor an operator's; an operator's start ends it."""
    e = engine_for(alerts={"crash_loop": {**LOOP, "restarts": 3, "backoff": "10s", "backoff_max": "40s"}})
    ev(e, 0, "STARTING", from_state="STOPPED")
    for t in (0.1, 1.1, 3.1):
        out = ev(e, t, "BACKOFF", from_state="STARTING")
        if t < 3:
            ev(e, t + 0.9, "STARTING", from_state="BACKOFF")
    (stop,) = out.actions
    assert (stop.kind, stop.source) == ("stop", "brake")
    ev(e, 3.1, "FATAL", from_state="BACKOFF")  # startretries used up: supervisord gives up before the stop
    out = answer(e, stop, "moved_on", 3.2, detail="it is FATAL", state="FATAL", mark=3.0)
    rec = e.records["svc:svc"]
    assert not out.actions and rec.stopped_by == "lookout" and rec.braked and rec.brake_resume_at == 13.1
    assert not e.on_time(13.0).actions
    (begin,) = e.on_time(13.1).actions
    assert (begin.kind, begin.step, begin.mark) == ("start", "start", 3.0)
    ev(e, 13.2, "STARTING", from_state="FATAL")  # lookout's own start
    ev(e, 13.3, "BACKOFF", from_state="STARTING")  # and the program dies again
    out = answer(e, begin, "died", 13.4, detail="start: SPAWN_ERROR", state="BACKOFF", mark=13.0)
    (stop,) = out.actions  # the brake's next round: stopped now, started again after 20 s
    assert (stop.kind, stop.source) == ("stop", "brake") and rec.brake_resume_at == 33.4
    assert (REMEDIATION, rec.namespec) not in e.alerts and rec.failures  # not lookout's failure, not an operator's
    assert rec.operator_at == 0.0
    ev(e, 13.5, "STOPPED", from_state="BACKOFF")
    answer(e, stop, "done", 13.6, mark=13.0)
    ev(e, 20, "STARTING", from_state="STOPPED")  # an operator starts it during the wait: the cycle is theirs
    assert not rec.braked and rec.brake_resume_at is None and not e.on_time(40).actions


def brake_starts(sup) -> int:
    return len(history(sup, "gw:gw", "lookout begins to start it: crash-loop backoff over"))


@pytest.mark.long
def test_fatal_at_boot_is_started_again_by_the_brake_once_its_dependency_is_back(supervisor_factory, webhook):
    sup = supervisor_factory(GATEWAY, fast_alerts(webhook, crash_loop=LOOP)).start()
    webhook.wait("gw", timeout=30)
    wait_for(lambda: sup.state_of("gw:gw") == "FATAL", 30, "supervisord gives up: FATAL")
    # The brake's cycle goes on although its stop found gw FATAL, also after a start of its own that
    # failed again (the database is still down).
    wait_for(lambda: brake_starts(sup) >= 2, 60, "two starts by the brake", interval=0.5)
    (sup.root / "db.up").touch()  # the database is back
    wait_for(lambda: sup.state_of("gw:gw") == "RUNNING", 30, "started by the brake: RUNNING")
    wait_for(lambda: webhook.matching("RESOLVED", "gw is running again"), 30, "its alert resolves")
    assert not webhook.matching("stopped by an operator")
    assert not webhook.matching("lookout's start failed") and not webhook.matching("could not be")
    assert not history(sup, "gw:gw", "lookout's start failed")


@pytest.mark.long
def test_a_hold_keeps_a_fatal_program_down_until_released(supervisor_factory, webhook):
    sup = supervisor_factory(GATEWAY, fast_alerts(webhook, crash_loop=HOLD_LOOP)).start()
    webhook.wait("gw", timeout=30)
    wait_for(lambda: sup.state_of("gw:gw") == "FATAL" and (sup.process_row("gw:gw") or {}).get("brake_resume_at"),
             30, "FATAL, the brake waiting to start it")
    status = lookout_cli(sup, "status", "gw").stdout
    assert "braked: starts again in" in status and "lookout hold gw" in status, status
    held = lookout_cli(sup, "hold", "gw")
    assert held.returncode == 0 and "gw: held" in held.stdout, held.stdout + held.stderr
    (sup.root / "db.up").touch()
    starts = spawns(sup, "gw")
    stays(lambda: sup.state_of("gw:gw") in ("FATAL", "STOPPED") and spawns(sup, "gw") == starts, 12,
          "held down (the brake would have started it within 8 s)")
    released = lookout_cli(sup, "release", "gw")
    assert released.returncode == 0 and "released" in released.stdout, released.stdout + released.stderr
    wait_for(lambda: sup.state_of("gw:gw") == "RUNNING", 20, "started by the brake once released")
    wait_for(lambda: webhook.matching("RESOLVED", "gw is running again"), 30, "its alert resolves")
    assert not webhook.matching("lookout's start failed")


def test_a_round_of_the_brake_held_back_by_a_hold_comes_on_release():
    """The operator holds it while the brake's start is under way, and the start dies: nothing while
    held; on release the brake goes on (its next round), as it would have."""
    from lookout.listener.rules.models import Hold

    e = engine_for(alerts={"crash_loop": {**LOOP, "restarts": 2, "backoff": "10s", "backoff_max": "40s"}})
    ev(e, 0, "STARTING", from_state="STOPPED")
    ev(e, 0.1, "BACKOFF", from_state="STARTING")
    ev(e, 1, "STARTING", from_state="BACKOFF")
    (stop,) = ev(e, 1.1, "BACKOFF", from_state="STARTING").actions
    ev(e, 1.2, "STOPPED", from_state="BACKOFF")
    answer(e, stop, "done", 1.3, mark=1.0)
    (begin,) = e.on_time(11.2).actions
    ev(e, 11.3, "STARTING", from_state="STOPPED")
    e.on_holds([Hold(1, "svc:svc", 11.4)], 11.4)  # during lookout's start
    ev(e, 11.5, "BACKOFF", from_state="STARTING")
    assert not answer(e, begin, "died", 11.6, state="BACKOFF", mark=11.0).actions
    ev(e, 12.6, "STARTING", from_state="BACKOFF")
    assert not ev(e, 12.7, "BACKOFF", from_state="STARTING").actions  # held: the brake waits
    (stop,) = e.on_holds([], 20).actions
    assert (stop.kind, stop.source) == ("stop", "brake")
