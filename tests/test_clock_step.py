"""Issue 21, case 5: the wall clock stepped back an hour, or forward two (NTP, a VM restored), while
lookout waits on something: nothing it does comes sooner or later. Against a real supervisord whose
wall clock (and its listener's and programs') steps (tests/clockstep/sitecustomize.py); every wait
is measured on this test's own monotonic clock, from what can be seen (supervisord's answers, the
store, the webhook), and judged with the margins of a busy machine."""

from __future__ import annotations

import os
import signal
import time

import pytest

from .conftest import fast_alerts
from .harness import free_port, wait_for, web_program

STEPS = pytest.mark.parametrize("step", [-3600.0, 7200.0], ids=["back-1h", "forward-2h"])

CRASHER = """\
[program:bk]
command=sh -c 'if [ -f %(here)s/fixed ]; then exec sleep 1000; fi; sleep 1.5; echo "bk: no market data" >&2; exit 3'
startsecs=1
autorestart=true
stopwaitsecs=1
"""


def _braked_and_stopped(sup) -> bool:
    row = sup.process_row("bk:bk") or {}
    return bool(row.get("braked")) and row.get("brake_resume_at") is not None and sup.state_of("bk:bk") == "STOPPED"


def _starts_after(sup, since: float, timeout: float) -> float:
    """Seconds from `since` (this test's monotonic clock) until lookout's start of bk shows."""
    wait_for(lambda: sup.state_of("bk:bk") in ("STARTING", "RUNNING"), timeout, "lookout to start bk again",
             interval=0.05)
    return time.monotonic() - since


def _stepped(sup, step: float) -> None:
    sup.step_clock(step)
    wait_for(lambda: "the wall clock stepped" in sup.listener_output(), 10, "the listener to see the step")


@STEPS
def test_the_brake_starts_a_program_after_its_backoff_whatever_the_wall_clock_did(supervisor_factory, webhook,
                                                                                  step):
    loop = {"restarts": 2, "within": "1m", "action": "backoff", "backoff": "10s"}
    sup = supervisor_factory(CRASHER, fast_alerts(webhook, crash_loop=loop), clock_step=True).start()
    webhook.wait("bk is crash-looping", timeout=30)
    wait_for(lambda: _braked_and_stopped(sup), 30, "the brake's stop", interval=0.05)
    stopped = time.monotonic()
    (sup.root / "fixed").touch()  # the start by lookout will run
    _stepped(sup, step)
    waited = _starts_after(sup, stopped, 40)
    # decided at the crash 10 s before its start, and the stop came right after: 10 s, less the stop's moment
    assert 7.0 <= waited <= 13.0, f"started {waited:.1f}s after the brake's stop (backoff 10s, clock {step:+.0f}s)"
    sup.wait_state("bk:bk", "RUNNING", 15)
    assert webhook.matching("crash-loop backoff: stopped by lookout, started again in 10s")


@pytest.mark.long
@STEPS
def test_a_stored_brake_start_comes_on_time_after_a_step_while_the_listener_was_stopped(supervisor_factory,
                                                                                       webhook, step):
    loop = {"restarts": 2, "within": "1m", "action": "backoff", "backoff": "20s"}
    sup = supervisor_factory(CRASHER, fast_alerts(webhook, crash_loop=loop), clock_step=True).start()
    wait_for(lambda: _braked_and_stopped(sup), 40, "the brake's stop", interval=0.05)
    stopped = time.monotonic()
    (sup.root / "fixed").touch()
    old = sup.listener_pid()
    assert sup.ctl("stop", "lookout").returncode == 0
    sup.step_clock(step)  # while no listener runs
    assert sup.ctl("start", "lookout").returncode == 0
    wait_for(lambda: sup.listener_running_anew(old) and sup.listener_output().count("lookout-listener ready") >= 2,
             20, "the listener again")
    assert sup.state_of("bk:bk") == "STOPPED", "started before its backoff was over"
    assert "while no listener ran" in sup.listener_output()
    waited = _starts_after(sup, stopped, 40)
    assert 17.0 <= waited <= 23.5, f"started {waited:.1f}s after the brake's stop (backoff 20s, clock {step:+.0f}s)"


def _probe_times(sup) -> set[float]:
    with sup.db() as c:
        return {r[0] for r in c.execute("SELECT last_at FROM probes WHERE namespec = 'web:web'")}


@STEPS
def test_probes_keep_their_period_and_a_hung_program_is_restarted_after_a_step(supervisor_factory, webhook, step):
    port = free_port()
    settings = fast_alerts(webhook)
    settings["probes"] = [{"match": "web", "http": {"url": f"http://127.0.0.1:{port}/healthz", "body": "ok"},
                           "initial_delay": "1s", "period": "1s", "timeout": "500ms", "failure_threshold": 3,
                           "action": "restart"}]
    settings["remediation"] = {"backoff": "2s"}
    sup = supervisor_factory(web_program(port), settings, clock_step=True).start()
    wait_for(lambda: (sup.process_row("web:web") or {}).get("state") == "RUNNING" and _probe_times(sup), 20,
             "the first probe")
    before = max(_probe_times(sup))
    _stepped(sup, step)
    # Results are saved at most once a second, so a busy machine may show every other one: the test waits
    # (a deadline, not a count in a fixed time) for four results stamped after the step, and judges their
    # schedule: a period of 1 s (four span three periods at least), not an hour's pause (a step back).
    after: set[float] = set()

    def four_results() -> bool:
        after.update(t for t in _probe_times(sup) if abs(t - before) > 1800)
        return len(after) >= 4

    wait_for(four_results, 20, f"four probe results after the clock stepped {step:+.0f}s", interval=0.1)
    times = sorted(after)
    assert times[-1] - times[0] >= 2.5, f"four probes in {times[-1] - times[0]:.1f}s at a 1 s period: {times}"
    pid = sup.info("web:web")["pid"]
    (sup.root / "hang.web").touch()
    hung = time.monotonic()
    webhook.wait("web is unhealthy (http probe)", "timed out after 500ms 3 times in a row", timeout=20)
    wait_for(lambda: sup.info("web:web")["pid"] != pid, 20, "lookout's restart")
    assert time.monotonic() - hung < 15, "three failed probes a second apart, a restart: well within 15 s"
    webhook.wait("restarted by lookout, 1st of 3 allowed in 1h", timeout=20)


CRASHING_AND_FATAL = """\
[program:never]
command=sh -c 'exit 1'
startsecs=1
startretries=0
autorestart=false

[program:feed]
command=sleep 1000
startsecs=1
autorestart=true
"""


@pytest.mark.long
@STEPS
def test_group_wait_and_reminders_keep_their_timing_across_a_step(supervisor_factory, webhook, step):
    settings = fast_alerts(webhook, group_wait="4s", repeat_interval="1m")
    sup = supervisor_factory(CRASHING_AND_FATAL, settings, clock_step=True).start()
    fatal = webhook.wait("never gave up starting", timeout=30)[0]
    sup.wait_state("feed:feed", "RUNNING", 15)
    os.kill(sup.info("feed:feed")["pid"], signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: _pending_notices(sup), 5, "the crash's notice, waiting out group_wait", interval=0.02)
    _stepped(sup, step)  # while it waits
    webhook.wait("feed crashed", timeout=20)
    took = time.monotonic() - killed
    assert 3.5 <= took <= 8.0, f"the crash was sent {took:.1f}s after it (group_wait 4s, clock {step:+.0f}s)"
    reminder = webhook.wait("REMINDER", "never gave up starting", timeout=90)[0]
    between = reminder.at - fatal.at  # (this test's own wall clock, which does not step)
    assert 57.0 <= between <= 67.0, f"the reminder came {between:.1f}s after the alert (repeat_interval 1m)"


def _pending_notices(sup) -> int:
    with sup.db() as c:
        return c.execute("SELECT COUNT(*) FROM notifications WHERE dispatched_at IS NULL").fetchone()[0]
