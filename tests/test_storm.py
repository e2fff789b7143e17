"""Acceptance 7: 200 programs die at the same moment: no overflow with the shipped snippet,
and their alerts arrive in at most 5 messages."""

from __future__ import annotations

import os
import signal

import pytest

from .conftest import fast_alerts
from .harness import stays, wait_for

N = 200


@pytest.mark.long
def test_200_programs_exit_at_once(supervisor_factory, webhook):
    programs = "\n".join(f"[program:p{i:03d}]\ncommand=sleep 1000\nstartsecs=1\n" for i in range(N))
    sup = supervisor_factory(programs, fast_alerts(webhook, group_wait="5s")).start()
    wait_for(
        lambda: (
            sum(p["statename"] == "RUNNING" for p in sup.rpc().call("supervisor.getAllProcessInfo")) == N + 1
        ),
        60,
        "all programs RUNNING",
    )
    pids = [p["pid"] for p in sup.rpc().call("supervisor.getAllProcessInfo") if p["group"] != "lookout"]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)

    names = [f"p{i:03d}:p{i:03d}" for i in range(N)]
    wait_for(
        lambda: all(webhook.entries_for(ns, "crashed and was restarted") for ns in names),
        60,
        "every crash alerted",
    )
    wait_for(lambda: all(webhook.entries_for(ns, "running again") for ns in names), 60, "every recovery")
    for ns in names:
        assert len(webhook.entries_for(ns, "crashed and was restarted")) == 1, ns
    stays(lambda: len(webhook.messages) <= 5, 3, "at most 5 messages")
    assert len(webhook.messages) <= 5, [m.title for m in webhook.messages]
    assert "overflowed" not in sup.log()
    wait_for(lambda: all((sup.process_row(ns) or {}).get("restarts") == 1 for ns in names), 10, "counted")
