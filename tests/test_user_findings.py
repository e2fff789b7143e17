"""Issue 21 (a new user's and an attacker's findings), against a real supervisord: a global
`--color` and the grammar of `lookout status`; exits attributed to the run they belong to; a
hostile program name used raw over XML-RPC."""

from __future__ import annotations

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
