"""Silences: what a silence holds back and is still open when it ends is sent then."""

from __future__ import annotations

import subprocess
import sys

from .conftest import fast_alerts
from .harness import stays, wait_for
from .test_crash_loop import CRASHER


def cli(sup, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lookout.listener", "-c", str(sup.config_path), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_silence_holds_alerts_until_unsilenced(supervisor_factory, webhook):
    settings = fast_alerts(webhook, crash_loop={"restarts": 3, "within": "1m"})
    sup = supervisor_factory(CRASHER, settings, listener=True)
    # The silence is written to the store before supervisord (and the listener) start.
    out = cli(sup, "silence", "flaky:*", "--for", "30m", "--reason", "deploy")
    assert out.returncode == 0 and "silence 1" in out.stdout, out.stderr
    assert "flaky:*" in cli(sup, "silences").stdout
    sup.start()
    wait_for(lambda: (sup.process_row("flaky:flaky") or {}).get("crash_looping") == 1, 20, "crash loop seen")
    stays(lambda: not webhook.messages, 3, "silenced")
    assert cli(sup, "unsilence", "1").returncode == 0
    msg = webhook.wait("flaky is crash-looping", timeout=10)
    assert len(msg) == 1
    assert "no active silences" in cli(sup, "silences").stdout
