"""Acceptance 8: a notification target that prints to stdout cannot disable the listener."""

from __future__ import annotations

from pathlib import Path

from .conftest import fast_alerts
from .harness import wait_for

PROGRAMS = """\
[program:first]
command=sh -c 'if [ -f %(here)s/first.done ]; then exec sleep 1000; fi;
    touch %(here)s/first.done; sleep 1.2; exit 9'
startsecs=1

[program:second]
command=sh -c 'if [ -f %(here)s/second.done ]; then exec sleep 1000; fi; sleep 1;
    while [ ! -f %(here)s/go ]; do sleep 0.2; done;
    touch %(here)s/second.done; exit 9'
startsecs=1
"""


def test_stdout_writes_in_a_target_do_not_break_the_protocol(supervisor_factory, webhook):
    settings = fast_alerts(webhook)
    settings["notify"]["urls"] = ["printer://", webhook.url()]
    settings["notify"]["plugin_paths"] = [str(Path(__file__).parent / "plugins")]
    sup = supervisor_factory(PROGRAMS, settings).start()
    webhook.wait("first crashed", timeout=20)
    wait_for(lambda: "PRINTED TO STDOUT" in sup.listener_output(), 10, "plugin output in stderr log")
    assert "RAW WRITE TO FD 1" in sup.listener_output()
    # The listener still receives events after the plugin wrote to 'stdout'.
    (sup.root / "go").touch()
    webhook.wait("second crashed", timeout=20)
    assert "UNKNOWN state" not in sup.log()
    assert "bad result line" not in sup.log()
