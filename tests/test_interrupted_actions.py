"""Issue 21: lookout's own restart cut short by the listener's end, against a real supervisord.

The program ignores SIGTERM, so lookout's stop waits out its stopwaitsecs (STOPPING); the listener
ends meanwhile. A graceful end (`supervisorctl restart lookout`) still gets its own stop call's
answer, which proves the stop was lookout's: the restart is finished. After a kill -9 that answer is
lost, and the next listener says so as soon as the program is STOPPED, not at the next periodic
reconcile a minute later."""

from __future__ import annotations

import os
import re
import signal
import time

from .harness import stays, wait_for
from .test_guards import history
from .test_probes import settings

STUBBORN = """\
[program:stubborn]
command=sh -c 'trap "" TERM; while :; do sleep 0.2; done'
stopwaitsecs={wait}
startsecs=1
"""
NS = "stubborn:stubborn"


def sick_probe(marker) -> dict:  # noqa: ANN001
    """Fails while `marker` exists: one failure and lookout restarts the program."""
    return {"match": "stubborn", "exec": ["sh", "-c", f"test ! -e {marker}"], "initial_delay": "1s",
            "period": "1s", "timeout": "1s", "failure_threshold": 1, "action": "restart"}


def test_listener_restarted_gracefully_while_its_stop_waits_finishes_the_restart(supervisor_factory, webhook,
                                                                                 tmp_path):
    """`supervisorctl restart lookout` while lookout's stop waits (stopwaitsecs 4): started again as
    lookout's restart, no "cut short" alert, and the old listener ended by itself (exit status 0),
    within its own stopwaitsecs."""
    sick = tmp_path / "sick"
    sick.touch()
    sup = supervisor_factory(STUBBORN.format(wait=4), settings(webhook, [sick_probe(sick)]))
    sup.start()
    wait_for(lambda: sup.state_of(NS) == "STOPPING", 30, "lookout's stop waiting on stopwaitsecs")
    sick.unlink()  # healthy once started again: one restart
    old = sup.listener_pid()
    assert sup.ctl("restart", "lookout").returncode == 0
    wait_for(lambda: sup.listener_running_anew(old), 30, "the next listener")
    wait_for(lambda: sup.state_of(NS) == "RUNNING" and history(sup, NS, "restarted by lookout"), 30,
             "lookout's restart finished by the next listener")
    stays(lambda: not webhook.matching("cut short"), 4, "no 'cut short' alert")
    assert re.search(r"stopped: lookout \(exit status 0\)", sup.log()), sup.log()[-2000:]


def test_listener_killed_while_its_stop_waits_says_so_when_it_is_stopped(supervisor_factory, webhook, tmp_path):
    """kill -9 of the listener while lookout's stop waits (stopwaitsecs 8): the next listener is up
    while the program is still STOPPING; the "cut short" alert comes within seconds of STOPPED."""
    sick = tmp_path / "sick"
    sick.touch()
    sup = supervisor_factory(STUBBORN.format(wait=8), settings(webhook, [sick_probe(sick)]))
    sup.start()
    wait_for(lambda: sup.state_of(NS) == "STOPPING", 30, "lookout's stop waiting on stopwaitsecs")
    old = sup.listener_pid()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: sup.listener_running_anew(old), 30, "the next listener")
    wait_for(lambda: sup.listener_output().count("lookout-listener ready") >= 2, 30, "the next listener ready")
    assert sup.state_of(NS) == "STOPPING"  # (the case: the next listener finds it still stopping)
    wait_for(lambda: sup.state_of(NS) == "STOPPED", 20, "stopped by SIGKILL after stopwaitsecs")
    stopped = time.monotonic()
    webhook.wait("CRITICAL", "stubborn is stopped", "cut short", timeout=15)
    assert time.monotonic() - stopped <= 10
