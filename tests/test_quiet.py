"""Acceptance 3: expected exits, operator stop/start/restart, reload and shutdown: silence."""

from __future__ import annotations

import pytest

from .conftest import fast_alerts
from .harness import stays, wait_for

PROGRAMS = """\
[program:oneshot]
command=sh -c 'sleep 1.5; exit 0'
startsecs=1
autorestart=unexpected

[program:steady]
command=sleep 1000

[program:reporter]
command=sh -c 'sleep 1.2; exit 7'
exitcodes=0,7
startsecs=1
autorestart=false
"""


@pytest.mark.long
def test_no_alerts_for_normal_operations(supervisor_factory, webhook):
    sup = supervisor_factory(PROGRAMS, fast_alerts(webhook)).start()
    sup.wait_state("oneshot:oneshot", "EXITED", 15)
    sup.wait_state("reporter:reporter", "EXITED", 15)
    assert sup.ctl("stop", "steady").returncode == 0
    assert sup.ctl("start", "steady").returncode == 0
    assert sup.ctl("restart", "steady").returncode == 0
    sup.ctl("restart", "all")  # reporter exits during the restart: supervisorctl says so, no alert
    stays(lambda: not webhook.messages, 5, "no messages after stop/start/restart")

    readies = sup.listener_output().count("lookout-listener ready")
    sup.ctl("reload")
    wait_for(
        lambda: sup.listener_output().count("lookout-listener ready") > readies, 30, "listener after reload"
    )
    sup.wait_state("steady:steady", "RUNNING", 15)
    sup.wait_state("oneshot:oneshot", "EXITED", 15)
    stays(lambda: not webhook.messages, 5, "no messages after reload")

    sup.ctl("shutdown")
    sup.proc.wait(30)
    stays(lambda: not webhook.messages, 3, "no messages after shutdown")
    assert "overflowed" not in sup.log()
    assert "UNKNOWN state" not in sup.log()
