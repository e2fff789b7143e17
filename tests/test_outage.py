"""Acceptance 5: the webhook answers 503 for 20 s while 5 programs crash; afterwards every
alert arrives exactly once. Also: the URL's credentials never reach the listener's log."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from .conftest import fast_alerts
from .harness import stays, wait_for

SECRET = "S3cr3tT0kenXYZ"

ONCE = """\
[program:svc{i}]
command=sh -c 'if [ -f %(here)s/crashed.svc{i} ]; then exec sleep 1000; fi;
    touch %(here)s/crashed.svc{i}; sleep {delay}; echo "svc{i} lost its database" >&2; exit 2'
startsecs=1
autorestart=true
"""


@pytest.mark.long
def test_alerts_survive_a_target_outage(supervisor_factory, webhook):
    webhook.fail_status = 503
    programs = "\n".join(ONCE.format(i=i, delay=1.2 + 0.7 * i) for i in range(5))
    settings = fast_alerts(webhook)
    settings["notify"]["urls"] = [f"json://lookout:{SECRET}@127.0.0.1:{webhook.port}/hook"]
    sup = supervisor_factory(programs, settings).start()
    outage_end = time.time() + 20
    wait_for(lambda: webhook.failed_attempts >= 3, 20, "failed deliveries during the outage")
    status = subprocess.run([sys.executable, "-m", "lookout.cli", "-c", str(sup.config_path), "status"],
                            capture_output=True, text=True, timeout=60)  # the failing target, without its secret
    assert f"DELIVERY json://127.0.0.1:{webhook.port}: " in status.stdout and SECRET not in status.stdout, status
    wait_for(lambda: time.time() >= outage_end, 25, "end of the 20 s outage", interval=0.5)
    webhook.fail_status = 0

    names = [f"svc{i}:svc{i}" for i in range(5)]
    for ns in names:
        wait_for(lambda ns=ns: webhook.entries_for(ns, "crashed and was restarted"), 30, f"{ns} crash")
        wait_for(lambda ns=ns: webhook.entries_for(ns, "running again"), 30, f"{ns} recovery")

    def once_each() -> bool:
        return all(
            len(webhook.entries_for(ns, "crashed and was restarted")) == 1
            and len(webhook.entries_for(ns, "running again")) == 1
            for ns in names
        )

    stays(once_each, 3, "every alert exactly once")
    entries = webhook.entries()  # and in order: no recovery is heard before its crash
    for ns in names:
        crash, back = (next(i for i, e in enumerate(entries) if e in webhook.entries_for(ns, needle))
                       for needle in ("crashed and was restarted", "running again"))
        assert crash < back, (ns, entries)
    with sup.db() as c:  # `lookout history` says it was heard, after the queued line
        said = [r[0] for r in c.execute("SELECT detail FROM history WHERE namespec = 'svc0:svc0' AND kind = 'notify' "
                                         "ORDER BY id")]
    assert said[0].startswith("firing") and f"sent to json://127.0.0.1:{webhook.port}" in said, said
    assert not any(SECRET in line for line in said)
    log = sup.listener_output()
    assert "retry" in log
    assert SECRET not in log
    assert "json://127.0.0.1:" in log
