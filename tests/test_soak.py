"""Issue 14: one store shared by three programs. For a minute, a crash storm for the listener,
four `lookout` processes running every command in loops (silence and hold too), an exporter
scraped every second, and a listener restart in the middle. Afterwards the counters equal what
supervisord did, no store file is "(deleted)" for the listener, a fresh reader sees its writes
(the harness checks that after every test), and no notification was sent twice."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import pytest

from .conftest import fast_alerts
from .harness import wait_for

STORM_SECONDS = 60.0
RUNS = 40  # `lookout` commands at least, in the storm
PROGRAMS = 6
STORMY = """\
[program:w{i}]
command=sh -c 'if [ ! -f %(here)s/storm ]; then exec sleep 1000; fi; sleep 1.{i}; echo "w{i} falls over" >&2; exit 4'
startsecs=1
autorestart=true
startretries=1000
"""
COMMANDS = [
    ["status"], ["status", "--json"], ["alerts"], ["alerts", "--json"], ["history", "w1"], ["silences"],
    ["silence", "nothing-here-*", "--for", "5m", "--reason", "soak"], ["hold", "w2"], ["release", "w2"],
]


def _lookout_loop(config: str, stop: threading.Event, failures: list[str], runs: list[int], offset: int) -> None:
    i = offset
    while not stop.is_set():
        args = COMMANDS[i % len(COMMANDS)]
        i += 1
        done = subprocess.run([sys.executable, "-m", "lookout", "-c", config, *args], capture_output=True,
                              text=True, timeout=60)
        runs[0] += 1
        if done.returncode not in (0, 1) or "Traceback" in done.stderr:
            failures.append(f"lookout {' '.join(args)}: {done.returncode} {done.stderr[-300:]}")
        if args[0] == "silence" and done.returncode == 0:  # and end it again: unsilence ID
            sid = re.search(r"silence (\d+)", done.stdout)
            if sid:
                subprocess.run([sys.executable, "-m", "lookout", "-c", config, "unsilence", sid.group(1)],
                               capture_output=True, timeout=60)


def _deleted_store_files(sup) -> list[str]:
    """The listener's open store files that are "(deleted)": it writes where nobody can read."""
    try:
        pid = sup.listener_pid()
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except (OSError, KeyError, TypeError):
        return []
    return [link for link in links if link.startswith(str(sup.state_path)) and link.endswith("(deleted)")]


@pytest.mark.long
def test_shared_store_soak(supervisor_factory, webhook, exporter_factory):
    settings = fast_alerts(webhook, crash_loop={"restarts": 3, "within": "1m"})
    sup = supervisor_factory("\n".join(STORMY.format(i=i) for i in range(PROGRAMS)), settings)
    (sup.root / "storm").touch()
    sup.start()
    stop, failures, runs, scrapes, deleted = threading.Event(), [], [0], [], []
    loops = [threading.Thread(target=_lookout_loop, args=(str(sup.config_path), stop, failures, runs, k * 2),
                              daemon=True) for k in range(4)]

    def scrape() -> None:
        # The first third without an exporter: its long-lived connection would hide a store whose locks
        # were dropped (the last connection to close would not be a `lookout` command's).
        if stop.wait(STORM_SECONDS / 3):
            return
        exporter = exporter_factory(sup)
        while not stop.is_set():
            scrapes.append(exporter.get("/metrics")[0])
            stop.wait(1.0)

    def watch() -> None:
        while not stop.is_set():
            deleted.extend(_deleted_store_files(sup))
            stop.wait(0.5)

    loops += [threading.Thread(target=scrape, daemon=True), threading.Thread(target=watch, daemon=True)]
    for t in loops:
        t.start()
    began = time.monotonic()
    stop.wait(STORM_SECONDS / 2)
    assert sup.ctl("restart", "lookout:lookout").returncode == 0  # the listener restarts mid-storm
    stop.wait(max(0.0, STORM_SECONDS - (time.monotonic() - began)))
    # At least RUNS commands in the storm: on a busy machine each takes longer, and the storm lasts
    # until they have run (what is judged is the store under them, not how fast a command starts).
    wait_for(lambda: runs[0] >= RUNS, 4 * STORM_SECONDS, f"{RUNS} lookout commands in the storm", interval=0.5)
    (sup.root / "storm").unlink()  # the storm ends: every program runs stably from its next start
    stop.set()
    for t in loops:
        t.join(90)
    assert not deleted, f"the listener wrote to deleted store files: {sorted(set(deleted))}"
    assert not failures, failures[:5]
    assert runs[0] >= RUNS and scrapes and all(code == 200 for code in scrapes), (runs, scrapes[-5:])

    names = [f"w{i}" for i in range(PROGRAMS)]
    for name in names:
        sup.wait_state(f"{name}:{name}", "RUNNING", 30)

    def counted_as_supervisord_did() -> bool:
        log = sup.log()
        for name in names:
            row = sup.process_row(f"{name}:{name}") or {}
            exits = len(re.findall(rf"exited: {name} \(exit status 4; not expected\)", log))
            spawns = len(re.findall(rf"spawned: '{name}' with pid", log))
            if (row.get("unexpected_exits"), row.get("restarts")) != (exits, spawns - 1):
                return False
        return True

    wait_for(counted_as_supervisord_did, 30, "the store's counters to equal supervisord's log")
    for name in names:
        wait_for(lambda name=name: webhook.entries_for(f"{name}:{name}", "running again"), 60, f"{name} recovery")
    for name in names:
        ns = f"{name}:{name}"
        assert len(webhook.entries_for(ns, "is crash-looping")) == 1, webhook.entries_for(ns)
        assert len(webhook.entries_for(ns, "running again")) == 1, webhook.entries_for(ns)
    sup.check_store_invariants()
