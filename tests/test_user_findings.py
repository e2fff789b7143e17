"""Issue 21 (a new user's and an attacker's findings), against a real supervisord: a global
`--color` and the grammar of `lookout status`; exits attributed to the run they belong to; a
hostile program name used raw over XML-RPC."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

from .conftest import fast_alerts
from .harness import wait_for

POOL = """\
[program:pool]
command=sleep 1000
numprocs=3
process_name=%(program_name)s_%(process_num)d
"""


def lookout(sup, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookout.cli", "-c", str(sup.config_path), *args],
                          capture_output=True, text=True, timeout=60)


def test_color_before_the_command_and_one_is_stopped_on_purpose(supervisor_factory, webhook):
    """`lookout --color status pool` colours (it said "unrecognized arguments: --color=always", which
    the user never typed); one member stopped by an operator reads "2 while 1 is stopped on purpose"."""
    settings = fast_alerts(webhook, groups=[{"match": "pool", "min_running": 3, "for": "10s"}])
    sup = supervisor_factory(POOL, settings).start()
    for i in range(3):
        sup.wait_state(f"pool:pool_{i}", "RUNNING", 15)
    sup.ctl("stop", "pool:pool_0")
    wanted = "(minimum 3, 2 while 1 is stopped on purpose)"
    out = wait_for(lambda: wanted in (r := lookout(sup, "status", "pool")).stdout and r, 20,
                   "status counts pool_0 as stopped on purpose")
    assert "1 are" not in out.stdout, out.stdout
    coloured = lookout(sup, "--color", "status", "pool")
    assert "unrecognized arguments" not in coloured.stderr and coloured.returncode in (0, 1), coloured.stderr
    assert "\x1b[" in coloured.stdout and wanted in coloured.stdout, coloured.stdout
    plain = lookout(sup, "--color", "always", "status", "pool", "--color=never")  # after the command wins
    assert "\x1b[" not in plain.stdout and wanted in plain.stdout, plain.stdout


def history(sup, name: str) -> list[dict]:
    out = lookout(sup, "history", name, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_exit_of_a_run_whose_restart_fails_at_once_is_its_own(supervisor_factory, webhook, tmp_path):
    """"It crashed and now won't start": killed by SIGKILL, then its restarts exit 4 at once until
    FATAL. History said EXITED and no exit row for the killed run (its lookup read a later run's
    exit 4), or pinned "exit status 4" on it. Each exit row is the run's own: the killed run's
    says SIGKILL, and no row attributes exit status 4 to a run that lasted seconds."""
    bad = tmp_path / "flip.bad"
    sup = supervisor_factory(f"""\
[program:flip]
command=sh -c 'if [ -e {bad} ]; then exit 4; fi; exec sleep 100000'
startsecs=1
startretries=1
autorestart=true
""", fast_alerts(webhook)).start()
    sup.wait_state("flip:flip", "RUNNING", 15)
    wait_for(lambda: any(r["detail"].startswith("RUNNING") for r in history(sup, "flip")), 15, "RUNNING in history")
    pid = sup.info("flip")["pid"]
    bad.touch()
    os.kill(pid, signal.SIGKILL)
    sup.wait_state("flip:flip", "FATAL", 20)
    fatal = webhook.wait("flip", "FATAL", timeout=30)[0]
    assert "killed by SIGKILL" not in fatal.body.split("last exit:", 1)[-1].split("\n", 1)[0], fatal.body

    def exits() -> list[str]:
        return [r["detail"] for r in history(sup, "flip") if r["kind"] == "exit"]

    try:
        rows = wait_for(lambda: (e := exits()) and any("killed by SIGKILL" in d for d in e) and e, 20,
                        "an exit row for the killed run")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {history(sup, 'flip')}") from None
    for detail in rows:  # the killed run lasted seconds, the failed restarts milliseconds
        if "SIGKILL" not in detail and "not known" not in detail:
            assert detail.startswith("exit status 4"), rows
            long = re.search(r"after running ([0-9.]+)s$", detail)
            assert not long or float(long.group(1)) < 1, rows
    assert sum("SIGKILL" in d for d in rows) == 1, rows
