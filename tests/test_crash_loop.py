"""Acceptance 1: a crash-looping program gets one crash-looping alert, then one resolved."""

from __future__ import annotations

import pytest

from .conftest import fast_alerts
from .harness import stays, wait_for

CRASHER = """\
[program:flaky]
command=sh -c 'if [ -f %(here)s/fixed ]; then exec sleep 1000; fi;
    sleep 1.5; echo "flaky: cannot bind port 7001" >&2; exit 3'
startsecs=1
autorestart=true
"""


@pytest.mark.long
def test_crash_loop_then_resolved(supervisor_factory, webhook):
    sup = supervisor_factory(
        CRASHER, fast_alerts(webhook, crash_loop={"restarts": 3, "within": "1m"})
    ).start()
    looping = webhook.wait("flaky is crash-looping", timeout=15)
    assert len(looping) == 1
    text = looping[0].text
    assert "exit status 3" in text
    assert "flaky: cannot bind port 7001" in text
    assert len(webhook.matching("flaky crashed and was restarted")) <= 1
    # (issue 23: a repeat crash before the loop is an update, "flaky crashed again"; at most one per message)

    (sup.root / "fixed").touch()
    webhook.wait("RESOLVED", "flaky is running again", timeout=30)
    count = len(webhook.messages)
    stays(lambda: len(webhook.messages) == count, 20, "no further messages")
    assert len(webhook.matching("RESOLVED", "flaky is running again")) == 1
    assert len(webhook.matching("flaky is crash-looping")) == 1
    row = wait_for(lambda: sup.process_row("flaky:flaky"), 5, "process row")
    assert row["restarts"] >= 3 and row["unexpected_exits"] >= 3
    assert row["crash_looping"] == 0
