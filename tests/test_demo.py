"""Acceptance 11: `make demo` on a fresh clone shows the crash-looping feed's alert within 30 s."""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from .harness import REPO


@pytest.mark.long
@pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None, reason="needs git and make")
def test_make_demo_on_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    skip = ("VIRTUAL_ENV", "SUPERVISOR_", "LOOKOUT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env["DEMO_DURATION"] = "120"
    # Build the clone's own virtualenv first: the 30 s are for the demo, not for pip.
    subprocess.run(["make", "venv"], cwd=clone, env=env, check=True, timeout=600, capture_output=True)
    proc = subprocess.Popen(["make", "demo"], cwd=clone, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    out = b""
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        started = time.monotonic()
        while b"is crash-looping" not in out:
            assert time.monotonic() - started < 30, out.decode(errors="replace")[-3000:]
            if sel.select(timeout=0.5):
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, out.decode(errors="replace")[-3000:]
                out += chunk
        text = out.decode(errors="replace")
        assert "trading_system:market_feed is crash-looping" in text
        # The quote server hangs after ~12 s: unhealthy, restarted by lookout, healthy again (its own
        # RESOLVED, or "recovered since" in the same message when it came within group_interval).
        healthy = re.compile(r"quote_server is healthy again|recovered since: is healthy again")
        while not healthy.search(out.decode(errors="replace")):
            assert time.monotonic() - started < 90, out.decode(errors="replace")[-3000:]
            if sel.select(timeout=0.5):
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, out.decode(errors="replace")[-3000:]
                out += chunk
        later = out.decode(errors="replace")
        unhealthy = later.index("trading_system:quote_server is unhealthy (http probe)")
        restarted = later.index("restarted by lookout, 1st of 3 allowed in 1h")
        assert unhealthy < restarted and healthy.search(later, unhealthy)
        assert "exit status 3" in text and "ECONNRESET" in text
        assert "Ctrl-C" in text and "inbox.log" in text
        port = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", text).group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'supervisor_process_crash_looping{group="trading_system",name="market_feed"} 1' in metrics
        lookout_status_matches_supervisorctl(clone, env)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert b"demo stopped" in rest, rest.decode(errors="replace")  # make itself exits -2 on Ctrl-C
    assert not (clone / ".demo" / "supervisord.pid").exists()
    assert "is crash-looping" in (clone / ".demo" / "inbox.log").read_text()


def lookout_status_matches_supervisorctl(clone, env) -> None:
    """Issue 9, acceptance 1: on the demo, `lookout status` shows supervisorctl's names and
    states, plus restarts, the exit reason and the open alert."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=clone, env=env, capture_output=True, text=True, timeout=60)

    ours = run(".venv/bin/lookout", "-c", ".demo/lookout.toml", "status")
    theirs = run(".venv/bin/supervisorctl", "-c", ".demo/supervisord.conf", "status")
    assert ours.returncode == 0, ours.stderr
    lines = {line.split()[0]: line for line in ours.stdout.splitlines()}
    states = {line.split()[0]: line.split()[1] for line in theirs.stdout.splitlines() if line.strip()}
    assert set(lines) == set(states), (ours.stdout, theirs.stdout)
    for name, state in states.items():
        if name != "trading_system:market_feed":  # it changes state every two seconds
            assert lines[name].split()[1] == state, (lines[name], state)
    feed = lines["trading_system:market_feed"]
    assert re.search(r"restarts [1-9]\d*/1h", feed) and "ALERT critical crash_loop" in feed, feed
    assert "last exit: exit status 3" in feed, feed
    assert "ALERT critical fatal" in lines["reconciler"], lines["reconciler"]
    assert run(".venv/bin/lookout", "-c", ".demo/lookout.toml", "status", "--check").returncode == 1
    deps = run(".venv/bin/lookout", "-c", ".demo/lookout.toml", "deps").stdout
    assert re.search(r"trading_system:order_executor\s+RUNNING\s+needs trading_system:risk_manager RUNNING", deps), deps
