"""Issue 7, acceptance 1, 2 and 7: what programs write cannot stop alerts.

Colour codes, NUL and other control characters in a crashing program's stderr (also in
supervisord's own main log at loglevel=debug), random bytes of every value from 30 programs,
and process names with a tab or a non-breaking space: every crash is alerted, the listener
never restarts, messages waiting in the outbox keep being retried.
"""

from __future__ import annotations

import random

from .conftest import fast_alerts
from .harness import wait_for

COLOURED = r"""[program:colours]
command=sh -c 'if [ -f %(here)s/crashed.colours ]; then exec sleep 1000; fi; touch %(here)s/crashed.colours;
    sleep 1.3; printf "\033[31mERROR\033[0m feed lost \000NUL\007bell\033]0;title\007 tab\there\r\nlast line\n" >&2;
    exit 3'
startsecs=1
autorestart=true

[program:second]
command=sh -c 'while [ ! -f %(here)s/go.second ]; do sleep 0.1; done; if [ -f %(here)s/crashed.second ];
    then exec sleep 1000; fi; touch %(here)s/crashed.second; echo "second: disk quota exceeded" >&2; exit 4'
startsecs=0
autorestart=true
"""


def _no_raw_controls(text: str) -> bool:
    return not any(c in text for c in ("\x1b", "\x00", "\x07"))


def _listener_never_restarted(sup, pid: int) -> None:
    assert sup.listener_pid() == pid
    assert sup.listener_output().count("lookout-listener ready") == 1
    assert "Traceback" not in sup.listener_output()


def test_colour_codes_and_nul_in_stderr(supervisor_factory, webhook):
    webhook.fail_status = 503  # the first delivery attempts fail: they must be retried from the outbox
    sup = supervisor_factory(COLOURED, fast_alerts(webhook)).start()
    pid = sup.listener_pid()
    wait_for(lambda: webhook.failed_attempts >= 2, 20, "failed deliveries of the first alert")
    (sup.root / "go.second").touch()
    wait_for(lambda: (sup.process_row("second:second") or {}).get("unexpected_exits") == 1, 15, "second crash seen")
    webhook.fail_status = 0
    first = webhook.wait("colours crashed", timeout=20)[0]
    assert "ERROR feed lost NUL" in first.body  # escapes removed, NUL dropped
    assert "\u2407bell" in first.body and "last line" in first.body  # BEL made visible
    assert "exit status 3" in first.body
    assert _no_raw_controls(first.text)
    second = webhook.wait("second crashed", timeout=20)[0]
    assert "second: disk quota exceeded" in second.body and "exit status 4" in second.body
    _listener_never_restarted(sup, pid)


def test_debug_main_log_and_no_tails(supervisor_factory, webhook):
    """supervisord copies child output into its main log at loglevel=debug: exit statuses come from
    there (readLog), with colour codes in it, and stderr_lines = 0 means no tail at all."""
    settings = fast_alerts(webhook)
    settings["notify"]["stderr_lines"] = 0
    sup = supervisor_factory(COLOURED, settings, loglevel="debug").start()
    pid = sup.listener_pid()
    first = webhook.wait("colours crashed", timeout=20)[0]
    assert "exit status 3" in first.body and "last line" not in first.body
    (sup.root / "go.second").touch()
    second = webhook.wait("second crashed", timeout=20)[0]
    assert "exit status 4" in second.body
    assert "\x1b[31m" in sup.log()  # the main log really held the colour codes
    _listener_never_restarted(sup, pid)


FUZZED = """[program:f{i}]
command=sh -c 'if [ -f %(here)s/crashed.f{i} ]; then exec sleep 1000; fi; touch %(here)s/crashed.f{i};
    sleep {delay}; cat %(here)s/payload.f{i} >&2; exit 5'
startsecs=1
autorestart=true
"""


def _payload(rng: random.Random) -> bytes:
    """Every byte value at least once, short and long lines, one line of 70 KB, no final newline."""
    values = list(range(256))
    rng.shuffle(values)
    chunks = [bytes(values)]
    for _ in range(rng.randint(5, 40)):
        chunks.append(rng.randbytes(rng.choice((1, 10, 100, 1000, 5000))))
        chunks.append(b"\n")
    chunks.insert(rng.randrange(len(chunks)), rng.randbytes(70_000).replace(b"\n", b" "))
    return b"".join(chunks)


def test_fuzzed_stderr_from_30_programs(supervisor_factory, webhook):
    n = 30
    rng = random.Random(7)
    programs = "\n".join(FUZZED.format(i=i, delay=round(1.2 + 0.1 * i, 1)) for i in range(n))
    settings = fast_alerts(webhook)
    settings["notify"]["max_detailed"] = n  # every crash in full, whatever the grouping
    sup = supervisor_factory(programs, settings)
    for i in range(n):
        (sup.root / f"payload.f{i}").write_bytes(_payload(rng))
    sup.start()
    pid = sup.listener_pid()
    for i in range(n):
        wait_for(lambda i=i: webhook.entries_for(f"f{i}:f{i}", "crashed and was restarted", "exit status 5"), 40,
                 f"f{i} alerted")
    for m in webhook.messages:
        assert _no_raw_controls(m.text)
    _listener_never_restarted(sup, pid)


ODD_NAMES = """[program:tab\tfeed]
command=sh -c 'if [ -f "%(here)s/crashed.tab" ]; then exec sleep 1000; fi; touch "%(here)s/crashed.tab";
    sleep 1.2; echo "tab feed down" >&2; exit 6'
startsecs=1
autorestart=true

[program:nbsp\u00a0feed]
command=sh -c 'if [ -f "%(here)s/crashed.nbsp" ]; then exec sleep 1000; fi; touch "%(here)s/crashed.nbsp";
    sleep 1.6; echo "nbsp feed down" >&2; exit 7'
startsecs=1
autorestart=true
"""


def test_names_with_a_tab_and_a_non_breaking_space(supervisor_factory, webhook):
    sup = supervisor_factory(ODD_NAMES, fast_alerts(webhook)).start()
    tab = webhook.wait("tab\u2409feed crashed", timeout=20)[0]  # the tab shown as its picture (issue 15)
    assert "exit status 6" in tab.body and "tab feed down" in tab.body and "\t" not in tab.text
    nbsp = webhook.wait("nbsp\u00a0feed crashed", timeout=20)[0]
    assert "exit status 7" in nbsp.body and "nbsp feed down" in nbsp.body
    log = sup.listener_output()
    assert "malformed event" not in log and "event(s) lost" not in log
