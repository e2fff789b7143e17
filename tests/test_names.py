"""Issue 15: process and group names with control characters, cleaned once where they enter
(events, XML-RPC answers, supervisord's main log, the store) by the same function: one program
is one record whatever path its name took, and nothing that reaches a terminal or a message
carries a control character."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import unicodedata

from lookout.text import clean_name, clean_xml

from .conftest import fast_alerts
from .harness import wait_for

HOSTILE = "ev\x1bil\x07bell\x08bs\u202eRLO"
# ESC, BEL, backspace; the right-to-left override
PROGRAM = """\
[program:{name}]
command=sh -c 'if [ -f %(here)s/fixed ]; then exec sleep 1000; fi; sleep 1.2; echo "it fell over" >&2; exit 7'
startsecs=1
autorestart=true
"""


def controls(text: str) -> list[str]:
    """Control and format characters a terminal acts on (Cc, Cf), except the newline of a line break."""
    return [repr(c) for c in text if unicodedata.category(c) in ("Cc", "Cf") and c != "\n"]


def test_one_function_for_every_path():
    for raw in (HOSTILE, "tab\tfeed", "nul\x00byte", "c1\x85next", "csi\x1b[31mred", "del\x7f", "plain_name-1"):
        via_xml = clean_name(clean_xml(raw.encode()).decode())
        assert clean_name(raw) == via_xml == clean_name(clean_name(raw)), raw
        assert not controls(clean_name(raw)), (raw, clean_name(raw))
    assert clean_name("plain_name-1") == "plain_name-1" and clean_name("caf\u00e9\u00a0x") == "caf\u00e9\u00a0x"


def test_two_names_stay_two_names():
    """Nothing is dropped: names that differ only in what is cleaned stay apart (two records)."""
    pairs = [("a\x00b", "ab"), ("csi\x1b[31mred", "csi[31mred"), ("x\u202ey", "x\ufffdy"), ("z\u200bw", "zw"),
             ("b\x85", "b\x86")]
    for one, other in pairs:
        assert clean_name(one) != clean_name(other), (one, other)
        assert clean_name(one) == clean_name(clean_xml(one.encode()).decode())


def lookout(sup, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "lookout", "-c", str(sup.config_path), *args], capture_output=True,
                          text=True, timeout=60)
    return done.stdout + done.stderr


def test_a_hostile_name_is_one_record_and_reaches_nobody_raw(supervisor_factory, webhook):
    settings = fast_alerts(webhook, crash_loop={"restarts": 3, "within": "1m"})
    sup = supervisor_factory(PROGRAM.format(name=HOSTILE), settings).start()
    shown = clean_name(HOSTILE)
    loop = webhook.wait("is crash-looping", timeout=40)[0]
    for message in webhook.matching(""):
        assert not controls(message.title) and not controls(message.body), (message.title, message.body)
    assert shown in loop.text
    sup.ctl("reread")  # and a reconcile, which reads the name from XML-RPC: still the same record
    (sup.root / "fixed").touch()
    wait_for(lambda: webhook.matching("RESOLVED"), 40, "the recovery")
    with sup.db() as c:
        rows = c.execute("SELECT namespec, restarts FROM processes WHERE namespec != 'lookout:lookout'").fetchall()
    assert len(rows) == 1 and rows[0][0] == f"{shown}:{shown}", rows
    restarts_in_log = len(re.findall(r"spawned: '", sup.log())) - 2  # minus the first start and the listener's
    assert rows[0][1] >= 3 and rows[0][1] == restarts_in_log, (rows, restarts_in_log)
    assert len(webhook.matching("is crash-looping")) == 1
    for args in (["status"], ["alerts"], ["history", shown], ["status", "--json"], ["history", shown, "--json"]):
        out = lookout(sup, *args)
        if args[-1] == "--json":
            assert json.loads(out), (args, out)  # found by the cleaned name
        elif args != ["alerts"]:
            assert shown in out, (args, out)
        assert not controls(out), (args, controls(out))
