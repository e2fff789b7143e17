"""Issue 4, acceptance 4: a real Alertmanager receives the listener's crash-loop alert with its
labels, groups it, delivers it to a webhook, keeps it alive while firing, and resolves it."""

from __future__ import annotations

import json
import socket
import urllib.request

from .conftest import fast_alerts
from .harness import wait_for
from .test_crash_loop import CRASHER


def am_notifications(webhook, status: str) -> list[dict]:
    return [a for m in webhook.messages if m.path == "/am" and isinstance(m.raw, dict)
            for a in m.raw.get("alerts", []) if a["status"] == status]


def test_crash_loop_reaches_alertmanager_and_resolves(supervisor_factory, webhook, alertmanager):
    settings = fast_alerts(webhook, crash_loop={"restarts": 3, "within": "1m"})
    settings["notify"]["urls"] = []
    settings["alertmanager"] = {"urls": [alertmanager], "resend_interval": "1s"}
    sup = supervisor_factory(CRASHER, settings).start()

    def looping() -> list[dict]:
        return [a for a in am_notifications(webhook, "firing")
                if a["labels"]["alertname"] == "SupervisorProcessCrashLooping"]
    alert = wait_for(looping, 30, "crash-looping alert delivered by Alertmanager")[0]
    labels = alert["labels"]
    assert labels["severity"] == "critical"
    assert (labels["group"], labels["name"]) == ("flaky", "flaky")
    assert labels["instance"] == socket.gethostname()
    assert "exit status 3" in alert["annotations"]["description"]
    assert "flaky: cannot bind port 7001" in alert["annotations"]["description"]
    grouped = [m.raw for m in webhook.messages if m.path == "/am" and m.raw.get("groupLabels", {}).get(
        "alertname") == "SupervisorProcessCrashLooping"]
    assert grouped and grouped[0]["groupLabels"]["instance"] == socket.gethostname()

    # Re-posted while firing: after well over 4 x resend_interval it is still active.
    def active() -> list[dict]:
        with urllib.request.urlopen(f"{alertmanager}/api/v2/alerts?active=true", timeout=5) as r:
            return [a for a in json.load(r) if a["labels"].get("alertname") == "SupervisorProcessCrashLooping"]
    first_ends = active()[0]["endsAt"]
    wait_for(lambda: active() and active()[0]["endsAt"] != first_ends, 10, "endsAt pushed forward by re-posts")

    (sup.root / "fixed").touch()
    wait_for(lambda: [a for a in am_notifications(webhook, "resolved")
                      if a["labels"]["alertname"] == "SupervisorProcessCrashLooping"], 40, "resolved in Alertmanager")
