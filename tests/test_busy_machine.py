"""A listener that falls behind (a busy machine, a slow start, a pause): the events it finds queued
in supervisord happened before anything lookout did since; they must not count as news about it."""

from __future__ import annotations

import os
import signal

from .conftest import fast_alerts
from .harness import wait_for

# The matrix's braked program, crashing only once the test has paused the listener ("go"): on a busy
# machine the listener could otherwise see three crashes and brake before it is paused.
BRAKED_ON_GO = """\
[program:bk]
command=sh -c 'while [ ! -f %(here)s/go ]; do sleep 0.1; done; sleep 1.5; echo "bk: no market data" >&2; exit 3'
startsecs=1
autorestart=true
stopwaitsecs=1
"""


def history(sup, namespec: str, *needles: str) -> list[str]:  # noqa: ANN001
    with sup.db() as c:
        rows = c.execute("SELECT detail FROM history WHERE namespec = ? ORDER BY id", (namespec,)).fetchall()
    return [d for (d,) in rows if all(n in d for n in needles)]


def test_a_backlog_of_crashes_is_one_brake_cycle_not_five(supervisor_factory, webhook):
    """Seen in the matrix on a busy machine: the listener took 6 s to start while a program
    crash-looped; the crashes it then read from supervisord's buffer, all from before the brake's
    stop, each stopped it again and doubled the wait: 10 s became 2m40s within 0.4 s. One crash
    loop, one stop, one wait of crash_loop.backoff (10 s)."""
    loop = {"restarts": 2, "within": "1m", "action": "backoff"}
    sup = supervisor_factory(BRAKED_ON_GO, fast_alerts(webhook, crash_loop=loop)).start()
    listener = sup.listener_pid()
    os.kill(listener, signal.SIGSTOP)  # behind: supervisord buffers the events meanwhile
    try:
        (sup.root / "go").touch()
        wait_for(lambda: sup.log().count("exited: bk ") >= 5, 30, "five crashes queued for the listener", interval=0.2)
    finally:
        os.kill(listener, signal.SIGCONT)
    wait_for(lambda: history(sup, "bk:bk", "lookout begins to stop it"), 30, "the brake")
    wait_for(lambda: history(sup, "bk:bk", "lookout begins to start it"), 40, "the brake's start after its wait")
    stops = history(sup, "bk:bk", "lookout begins to stop it")
    assert stops and all("start again in 10s" in s for s in stops), history(sup, "bk:bk")
