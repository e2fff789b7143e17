"""Acceptance 6: kill -9 of the listener during a crash storm loses and duplicates nothing,
and restart counters continue."""

from __future__ import annotations

import os
import signal
import time

from .conftest import fast_alerts
from .harness import stays, wait_for

STORMY = """\
[program:w{i}]
command=sh -c 'f=%(here)s/count.w{i}; n=$(cat $f 2>/dev/null || echo 0); n=$((n+1)); echo $n > $f;
    if [ $n -gt 3 ]; then exec sleep 1000; fi; sleep {delay}; echo "w{i} crash $n" >&2; exit 4'
startsecs=1
autorestart=true
"""
GROUP_WAIT = 2.0


def notifier_idle(sup) -> bool:
    """True when the notifier cannot start a send within the next half second: killing then
    tests event handling, not the unavoidable at-least-once window of a send in flight."""
    now = time.time()
    with sup.db() as c:
        pending = c.execute(
            "SELECT MIN(created_at) FROM notifications WHERE dispatched_at IS NULL"
        ).fetchone()[0]
        due = c.execute("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'").fetchone()[0]
    return (pending is None or pending + GROUP_WAIT > now + 0.5) and (due is None or due > now + 0.5)


def test_kill9_during_crash_storm(supervisor_factory, webhook):
    n = 8
    programs = "\n".join(STORMY.format(i=i, delay=1.1 + 0.15 * i) for i in range(n))
    settings = fast_alerts(webhook, group_wait=f"{GROUP_WAIT}s", crash_loop={"restarts": 3, "within": "1m"})
    sup = supervisor_factory(programs, settings).start()
    for _ in range(3):
        readies = sup.listener_output().count("lookout-listener ready")
        pid = sup.listener_pid()
        wait_for(lambda: notifier_idle(sup), 10, "a moment with no send due", interval=0.02)
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda pid=pid: sup.listener_running_anew(pid),
            20,
            "listener restarted",
        )
        wait_for(
            lambda n=readies: sup.listener_output().count("lookout-listener ready") > n, 20, "ready again"
        )

    names = [f"w{i}:w{i}" for i in range(n)]
    try:
        for ns in names:
            wait_for(lambda ns=ns: webhook.entries_for(ns, "is crash-looping"), 40, f"{ns} crash loop")
            wait_for(lambda ns=ns: webhook.entries_for(ns, "running again"), 40, f"{ns} recovery")
    except AssertionError as exc:
        with sup.db() as c:
            said = [tuple(r) for r in c.execute("SELECT namespec, kind, detail FROM history WHERE kind IN "
                                                "('alert', 'resolved', 'notify') ORDER BY id")]
        raise AssertionError(f"{exc}\n{[m.title for m in webhook.messages]}\n{said}\n"
                             f"{sup.listener_output()[-4000:]}") from None
    wait_for(lambda: all((sup.process_row(ns) or {}).get("restarts") == 3 for ns in names), 10, "counters")

    def once_each() -> bool:
        return all(
            len(webhook.entries_for(ns, "crashed and was restarted")) <= 1
            and len(webhook.entries_for(ns, "is crash-looping")) == 1
            and len(webhook.entries_for(ns, "running again")) == 1
            for ns in names
        )

    stays(once_each, 2 * GROUP_WAIT, "each alert exactly once (a late duplicate would be due by now)")
    for ns in names:
        row = sup.process_row(ns)
        assert (row["restarts"], row["unexpected_exits"]) == (3, 3), (ns, row)
    assert "UNKNOWN state" not in sup.log()
