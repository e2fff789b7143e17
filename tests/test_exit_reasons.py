"""Why and after how long a process died, in words, for the ways processes die: exit codes,
signals from inside and from outside, also when the events waited in supervisord's buffer
while the listener was still starting (the run time then comes from supervisord's log)."""

from __future__ import annotations

import os
import re

from .conftest import fast_alerts
from .harness import wait_for

ONCE = ("if [ -f %(here)s/died.{name} ]; then exec sleep 1000; fi; touch %(here)s/died.{name}; sleep 1.3; "
        "echo '{name}: last words' >&2; {death}")
DEATHS = {
    "segv": ("kill -SEGV $$", "killed by SIGSEGV"),
    "abrt": ("kill -ABRT $$", "killed by SIGABRT"),
    "e255": ("exit 255", "exit status 255"),
    "e1": ("exit 1", "exit status 1"),
    "term": ("kill -TERM $$", "killed by SIGTERM"),
}
PROGRAMS = "\n".join(f"""\
[program:{name}]
command=sh -c "{ONCE.format(name=name, death=death)}"
startsecs=1
autorestart=true
""" for name, (death, _) in DEATHS.items()) + """
[program:victim]
command=sleep 1000
"""


def test_exit_statuses_signals_and_run_times(supervisor_factory, webhook):
    sup = supervisor_factory(PROGRAMS, fast_alerts(webhook)).start()
    for name, (_, words) in DEATHS.items():
        body = webhook.wait(f"{name} crashed", timeout=30)[0].body
        block = body[body.index(f"{name} crashed"):]
        ran = re.search(rf"last exit: {words} after running (\d+(?:\.\d)?)s\b", block)
        assert ran and 1.2 <= float(ran.group(1)) < 10, block  # it slept 1.3 s: never "2ms"
        assert f"{name}: last words" in block
    os.kill(int(sup.ctl("pid", "victim").stdout.strip()), 9)
    body = webhook.wait("victim crashed", timeout=30)[0].body
    assert re.search(r"last exit: killed by SIGKILL after running \d", body), body
    wait_for(lambda: sup.process_row("segv:segv")["last_exit_text"] == "killed by SIGSEGV", 10, "stored")


def test_without_a_main_log_file_the_alert_says_the_status_is_unknown(supervisor_factory, webhook):
    """supervisord logging to its stdout (the container idiom): exit statuses cannot be read,
    since events do not carry them and the respawn clears getProcessInfo's. The alert still
    comes, with the log tail, and says why the status is missing."""
    programs = f"""\
[program:e1]
command=sh -c "{ONCE.format(name="e1", death="exit 1")}"
startsecs=1
autorestart=true
"""
    supervisor_factory(programs, fast_alerts(webhook), main_log="/dev/stdout").start()
    body = webhook.wait("e1 crashed", timeout=30)[0].body
    assert "last exit: unknown (" in body and "e1: last words" in body, body
    # It ran 1.3 s. Its events may have waited while the listener started: then the run time is
    # unknown (no log to read it from) and left out, or it comes from supervisord's whole-second
    # start times (within a second); it is never made up from the events' late times ("2ms").
    ran = re.search(r"after running (\d+(?:\.\d)?)(ms|s)\b", body)
    assert ran is None or (ran.group(2) == "s" and 0.3 <= float(ran.group(1)) < 10), body
